"""Non-deep-learning tools of the same studies: workflow clustering, cache simulation."""
