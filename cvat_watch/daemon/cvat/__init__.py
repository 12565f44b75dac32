"""cvat-watch reading a CVAT server itself: the REST client and the per-watch source."""
