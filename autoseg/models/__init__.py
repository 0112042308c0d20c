"""Retrain models: the decoded Auto-DeepLab network, the DARTS CIFAR network and smp baselines.

Importing this package registers every named model; build them with :func:`create_model`.
"""
from autoseg.models.autodeeplab import AutoDeepLab, autodeeplab_from_arch
from autoseg.models.darts_cifar import DartsCifarNetwork
from autoseg.models.registry import create_model, list_models, register_model
from autoseg.models.utils import count_parameters

__all__ = [
    "AutoDeepLab",
    "DartsCifarNetwork",
    "autodeeplab_from_arch",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
