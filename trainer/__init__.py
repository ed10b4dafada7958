"""trainer: Megatron-Core GPT trainer with in-run curriculum mixing over MDS buckets."""
