"""Arrow schemas of the tables in a store. The examples table also carries every column of the
source, so only its fixed columns are listed here."""

import pyarrow as pa

TOKENS_SCHEMA = pa.schema(
    [
        pa.field("example_id", pa.int64(), nullable=False),   # index of the example in the source
        pa.field("position", pa.int32(), nullable=False),     # index in the model input (input_ids)
        pa.field("row", pa.int64(), nullable=False),          # row of hidden_states holding this token
        pa.field("token_id", pa.int64(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("char_start", pa.int32(), nullable=False),   # offsets into examples.input_text
        pa.field("char_end", pa.int32(), nullable=False),
        pa.field("word_id", pa.int32(), nullable=False),      # index into examples.words, -1 if none
        pa.field("special", pa.bool_(), nullable=False),      # added by the tokenizer (CLS, BOS, ...)
        pa.field("is_target", pa.bool_(), nullable=False),    # inside the variant's target span
    ]
)

# Fixed columns of the examples table; source columns follow (lists stay lists).
EXAMPLE_FIXED_FIELDS = [
    pa.field("example_id", pa.int64(), nullable=False),
    pa.field("shard_id", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),            # the source text
    pa.field("input_text", pa.string(), nullable=False),      # what the model saw (variant applied)
    pa.field("words", pa.list_(pa.string()), nullable=False),
    pa.field("word_char_start", pa.list_(pa.int32()), nullable=False),  # offsets into input_text
    pa.field("word_char_end", pa.list_(pa.int32()), nullable=False),
    pa.field("target_char_start", pa.int32(), nullable=True),  # into text; null if no target
    pa.field("target_char_end", pa.int32(), nullable=True),
    pa.field("target_word_id", pa.int32(), nullable=True),
    pa.field("n_tokens", pa.int32(), nullable=False),         # model input length after truncation
    pa.field("truncated", pa.bool_(), nullable=False),
    pa.field("target_found", pa.bool_(), nullable=False),     # false if truncation cut the target
]
EXAMPLE_FIXED_COLUMNS = [f.name for f in EXAMPLE_FIXED_FIELDS]
