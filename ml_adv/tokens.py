"""The special token ids every built-in vocabulary shares (digits tokens, TFDS text bytes).

One place, because the data builders, attention masks and masked-LM corruption must agree:
PAD is masked out of attention, CLS starts every sequence (its final state feeds the
pooler), MASK replaces tokens in BERT pretraining, and ids below ``NUM_SPECIAL`` are never
chosen for corruption.
"""

PAD_ID = 0
CLS_ID = 1
SEP_ID = 2
MASK_ID = 3
NUM_SPECIAL = 4
SPECIAL_TOKENS = {"PAD": PAD_ID, "CLS": CLS_ID, "SEP": SEP_ID, "MASK": MASK_ID}
