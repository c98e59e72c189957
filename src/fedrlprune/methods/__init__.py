"""Every federated method, one module each behind `base.Method`; this registry is the one list.

The config's allowed `method` values, the bench's method table and `--resume` support all
derive from `METHODS`. A new method is a module here and one line below.
"""

from fedrlprune.methods.base import Method
from fedrlprune.methods.fedavg import FedAvg
from fedrlprune.methods.feddst import FedDST
from fedrlprune.methods.fedmp import FedMP
from fedrlprune.methods.fedrlprune import FedRLPrune
from fedrlprune.methods.fedrolex import FedRolex
from fedrlprune.methods.heterofl import HeteroFL
from fedrlprune.methods.lamp import Lamp
from fedrlprune.methods.lotteryfl import LotteryFL
from fedrlprune.methods.magnitude import Magnitude
from fedrlprune.methods.prunefl import PruneFL
from fedrlprune.methods.smallest import Smallest
from fedrlprune.methods.uniform import Uniform

METHODS: dict[str, type[Method]] = {
    m.name: m
    for m in (
        FedRLPrune,
        FedAvg,
        Magnitude,
        Uniform,
        Lamp,
        PruneFL,
        FedMP,
        LotteryFL,
        FedDST,
        HeteroFL,
        FedRolex,
        Smallest,
    )
}

__all__ = ["METHODS", "Method"]
