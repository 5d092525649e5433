"""Getting chunks into buffers from outside Python: ``push`` (genbuf push)."""
