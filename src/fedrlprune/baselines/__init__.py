"""The compared methods beside `fedrlprune`, one module per paper, on the same runner.

- `prunefl`: PruneFL (Jiang et al., TNNLS 2022), one mask readjusted by gradient importance
  per unit of round time.
- `fedmp`: FedMP (Jiang et al., ICDE 2022), a bandit per client picks its sub-model's ratio;
  residual recovery when merging.
- `lotteryfl`: LotteryFL (Li et al., 2020), personal lottery tickets.
- `feddst`: FedDST (Bibikar et al., AAAI 2022), prune and regrow at constant sparsity.

Each module holds the paper's math as pure functions and says where it departs from the paper;
`server.py` and `client.py` are the thin hooks the Flower apps call.
"""
