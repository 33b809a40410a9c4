"""One training process: worker loop, communicators, gradient buckets, rank-0 duties."""
