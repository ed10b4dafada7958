"""Code every package shares: typed configs, logging, the corpus folder's schema, tokenizer helpers,
paths to project-managed environments and models, and the inference-server client and launcher."""
