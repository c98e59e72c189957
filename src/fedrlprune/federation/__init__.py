"""The federation without Flower: the server's state and rounds (`server.py`), a client's side
of a round (`client.py`), what travels (`messages.py`), the merge rules (`aggregation.py`), the
clients and their budgets (`fleet.py`), and the checkpoint (`checkpoint.py`)."""
