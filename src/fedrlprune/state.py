"""A model as it travels and aggregates: named numpy arrays, and masks of what is kept.

`State` maps state_dict names to arrays; `Masks` maps parameter names to bool arrays of the same
shape (True = kept), with no entry for a dense parameter. Defined once, used everywhere.
"""

import numpy as np

State = dict[str, np.ndarray]
Masks = dict[str, np.ndarray]
