"""Analysis of architectures and searches: what a model costs (:mod:`autoseg.analysis.profiling`), the
supernet's expected cost (:mod:`autoseg.analysis.expected_cost`), figures (:mod:`autoseg.analysis.visualize`),
search-quality statistics (:mod:`autoseg.analysis.search_quality`) and the ground-truth tables
(:mod:`autoseg.analysis.ground_truth`)."""
