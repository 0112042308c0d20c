"""The search space's mathematics: cell genotypes and top-k decoding (:mod:`autoseg.space.genotype`),
network architectures and their files (:mod:`autoseg.space.architecture`), the trellis of resolutions and
Viterbi decoding (:mod:`autoseg.space.trellis`), and uniform sampling (:mod:`autoseg.space.sampling`)."""
