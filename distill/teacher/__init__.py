"""The listwise reasoning teacher: synthesis of reasoning lists, SFT → GRPO with trl, the
multi-view reward, evaluation and sliding-window reranking with a trained checkpoint."""
