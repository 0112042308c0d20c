"""Infrastructure every layer uses: user errors (:mod:`autoseg.utils.errors`), atomic files
(:mod:`autoseg.utils.files`), the process group (:mod:`autoseg.utils.process`), mixed precision
(:mod:`autoseg.utils.precision`) and ``torch.compile`` (:mod:`autoseg.utils.compilation`)."""
