"""Students distilled from a teacher's permutations: labelling, rank targets, cross-encoder
students (sentence-transformers losses) and the listwise LM student with its rationales."""
