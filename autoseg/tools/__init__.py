"""The command-line tools, one module each with ``main(argv)``; run them as ``autoseg <tool>``
(see :mod:`autoseg.cli`) or ``python tools/<tool>.py`` in a checkout."""
