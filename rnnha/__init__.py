"""RNN-HA: coarse-to-fine hierarchical attention for vehicle re-identification (Wei et al., ACCV 2018)."""
from .model import IGNORE_INDEX, RNNHA, RNNHAConfig, RNNHAOutput, hierarchical_loss

__version__ = "0.1.0"
__all__ = ["RNNHA", "RNNHAConfig", "RNNHAOutput", "hierarchical_loss", "IGNORE_INDEX", "__version__"]
