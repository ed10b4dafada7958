"""datagen: a datatrove corpus engine that filters, scores, routes, tags, tokenizes and writes MDS buckets."""
