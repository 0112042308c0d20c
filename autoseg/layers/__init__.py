"""Network building blocks: the candidate operations and their registry (:mod:`autoseg.layers.ops`) and
the ASPP head (:mod:`autoseg.layers.aspp`), shared by the search supernets and the retrained models."""
