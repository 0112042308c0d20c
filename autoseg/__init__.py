"""autoseg: differentiable architecture search for semantic segmentation.

A DARTS cell engine (:mod:`autoseg.layers.ops`, :mod:`autoseg.search`) serving the DARTS cell
search on CIFAR-10 and the hierarchical Auto-DeepLab search, the decoders that turn
architecture parameters into architectures (:func:`topk_cell`, :func:`viterbi_path`), and the
retrainable models they describe (:func:`create_model`), and what a model costs
(:func:`profile_model`).
"""
from autoseg.space.genotype import GENOTYPES, CellGenotype, Genotype, get_genotype, topk_cell
from autoseg.space.trellis import transition_probabilities, viterbi_path

__version__ = "0.1.0"

__all__ = ["GENOTYPES", "CellGenotype", "Genotype", "get_genotype", "topk_cell", "transition_probabilities",
           "viterbi_path", "create_model", "list_models", "sample_architecture",
           "profile_model"]


def __getattr__(name: str):
    """Import the model registry (it pulls in segmentation-models-pytorch), the sampler and the
    profiler lazily."""
    if name in ("create_model", "list_models"):
        from autoseg import models
        return getattr(models, name)
    if name == "sample_architecture":
        from autoseg.space.sampling import sample_architecture
        return sample_architecture
    if name == "profile_model":
        from autoseg.analysis.profiling import profile_model
        return profile_model
    raise AttributeError(f"module 'autoseg' has no attribute {name!r}")
