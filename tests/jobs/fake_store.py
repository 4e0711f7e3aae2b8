"""A small in-memory store with exactly the read interface of pipeline.store's stores, and
builders for synthetic WiC and CoNLL-U stores whose activations carry a known, layer-dependent
signal."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class FakeStore:
    def __init__(self, manifest, tokens: pa.Table, examples: pa.Table, hidden: dict[int, np.ndarray],
                 static: np.ndarray, path: str = "fake://store"):
        self.manifest = manifest
        self.layers = sorted(hidden)
        self.tokens = tokens
        self.examples = examples
        self._hidden = hidden
        self._static = static
        self.path = path
        self.reads: list[tuple[int, int]] = []   # (layer, number of rows read)

    def layer(self, L, rows=None):
        if L not in self._hidden:
            raise KeyError(f"layer {L} not stored")
        x = self._hidden[L]
        out = x if rows is None else x[np.asarray(rows, dtype=np.int64)]
        self.reads.append((L, len(out)))
        return out.copy()

    def static_embeddings(self, token_ids=None):
        if token_ids is None:
            return self._static.copy()
        return self._static[np.asarray(token_ids, dtype=np.int64)]


def _manifest(fmt, variant, layers, d, name="fake-model"):
    return {"model": {"name": name, "d_model": d, "n_layers": max(layers)}, "variant": variant,
            "keep": "all", "layers": list(layers), "dtype": "float32", "source": {"format": fmt}}


class _Builder:
    """Accumulates token rows and example rows."""

    def __init__(self, vocab, d, rng):
        self.tok = {k: [] for k in ["example_id", "position", "row", "token_id", "token", "char_start",
                                    "char_end", "word_id", "special", "is_target"]}
        self.vecs: list[list[np.ndarray]] = []   # per token: vector per layer
        self.vocab = vocab
        self.d = d
        self.rng = rng

    def add(self, ex, pos, token_id, token, word_id, special, is_target, vecs):
        t = self.tok
        t["example_id"].append(ex); t["position"].append(pos); t["row"].append(len(t["row"]))
        t["token_id"].append(token_id); t["token"].append(token); t["char_start"].append(0)
        t["char_end"].append(0); t["word_id"].append(word_id); t["special"].append(special)
        t["is_target"].append(is_target)
        self.vecs.append(vecs)

    def tokens_table(self):
        t = self.tok
        return pa.table({
            "example_id": pa.array(t["example_id"], pa.int64()), "position": pa.array(t["position"], pa.int32()),
            "row": pa.array(t["row"], pa.int64()), "token_id": pa.array(t["token_id"], pa.int64()),
            "token": pa.array(t["token"], pa.string()), "char_start": pa.array(t["char_start"], pa.int32()),
            "char_end": pa.array(t["char_end"], pa.int32()), "word_id": pa.array(t["word_id"], pa.int32()),
            "special": pa.array(t["special"], pa.bool_()), "is_target": pa.array(t["is_target"], pa.bool_()),
        })

    def hidden(self, n_layers, dtype=np.float32):
        arr = np.asarray(self.vecs, dtype=np.float64)  # [n_tok, n_layers, d]
        return {L: arr[:, i].astype(dtype) for i, L in enumerate(range(n_layers))}


def _example_fixed(ex_id, words, target_word_id=None, found=True, n_tokens=0):
    text = " ".join(words)
    starts, ends, c = [], [], 0
    for w in words:
        starts.append(c); ends.append(c + len(w)); c += len(w) + 1
    return {"example_id": ex_id, "shard_id": 0, "text": text, "input_text": text, "words": list(words),
            "word_char_start": starts, "word_char_end": ends,
            "target_char_start": None if target_word_id is None else starts[target_word_id],
            "target_char_end": None if target_word_id is None else ends[target_word_id],
            "target_word_id": target_word_id, "n_tokens": n_tokens, "truncated": not found,
            "target_found": found}


def make_wic_store(splits=(("train", 90), ("dev", 45), ("test", 45)), variant="base", n_layers=4, d=24,
                   seed=0, unlabelled=(), not_found_pairs=(), dtype=np.float32, offset=25.0,
                   static_signal=False):
    """WiC pairs; at layer L the target vectors share a sense vector (same-sense pairs) with weight
    L/(n_layers-1) plus noise, on top of a large common offset (anisotropy). Static rows are random
    per token id (no signal). Labels alternate True/False. With static_signal, side 1 of a
    different-sense pair spells its target word with other token ids (as an inflected form would),
    so the static row of the target word's own tokens separates the labels."""
    rng = np.random.default_rng(seed)
    vocab = 200
    b = _Builder(vocab, d, rng)
    common = rng.normal(size=d) * offset
    static = rng.normal(size=(vocab, d)).astype(dtype)
    ex_rows = []
    ex_id = 0
    pair_no = 0
    for split, n in splits:
        for p in range(n):
            label = bool(pair_no % 2 == 0)
            lemma_sense = rng.normal(size=d)
            senses = [lemma_sense, lemma_sense if label else rng.normal(size=d)]
            found_pair = pair_no in not_found_pairs
            for side in (0, 1):
                words = ["the", f"lemma{p % 7}", "is", "here"]
                pos = 0
                signal_dir = senses[side]

                def vec(is_t, word_noise):
                    out = []
                    for L in range(n_layers):
                        w = L / max(n_layers - 1, 1)
                        v = common + rng.normal(size=d) * (1.2 if is_t else 1.0)
                        if is_t:
                            v = v + 3.0 * w * signal_dir
                        out.append(v + word_noise)
                    return out

                def add(tid, tok, wid, special, is_t):
                    nonlocal pos
                    b.add(ex_id, pos, tid, tok, wid, special, is_t, vec(is_t, 0.0))
                    pos += 1

                add(1, "[CLS]", -1, True, False)
                copies = 2 if variant == "repeat" else 1
                for c in range(copies):
                    last = c == copies - 1
                    for wi, w in enumerate(words):
                        n_sub = 2 if wi == 1 else 1
                        for k in range(n_sub):
                            is_t = (variant in ("base", "repeat")) and last and wi == 1 and not found_pair
                            tid = 10 + (sum(map(ord, w)) * 3 + k) % 150 if wi != 1 else 170 + (p % 7) * 2 + k
                            if wi == 1 and static_signal and side == 1 and not label:
                                tid = 186 + (p % 7) * 2 + k
                            add(int(tid), w if k == 0 else "##x", wi if last else -1, False, is_t)
                if variant == "prompt":
                    add(5, '"', -1, False, not found_pair)
                add(2, "[SEP]", -1, True, False)
                row = _example_fixed(ex_id, words, 1, found=not found_pair, n_tokens=pos)
                row.update({"pair_id": f"p{pair_no:05d}", "side": side,
                            "label": None if split in unlabelled else label, "split": split,
                            "lemma": words[1], "pos": "N"})
                ex_rows.append(row)
                ex_id += 1
            pair_no += 1
    examples = pa.Table.from_pylist(ex_rows)
    return FakeStore(_manifest("wic", variant, range(n_layers), d), b.tokens_table(), examples,
                     b.hidden(n_layers, dtype), static)


RELS = ["nsubj", "obj", "amod", "det", "advmod", "obl:tmod", "case"]
UPOS = ["NOUN", "VERB", "ADJ", "DET", "ADV", "PRON"]


def random_tree(n, rng):
    """heads (1-based, 0 = root) of a random tree over n words."""
    order = rng.permutation(n)
    heads = [0] * n
    for k in range(1, n):
        heads[order[k]] = int(order[rng.integers(0, k)]) + 1
    return heads


def make_conllu_store(splits=(("dev", 60), ("test", 20)), n_layers=3, d=48, seed=0, min_len=4, max_len=12,
                      dtype=np.float32, noise=0.05):
    """Random dependency trees. Word vectors (top layers) are a tree embedding: the root sits at the
    origin of a 'structure' subspace plus a per-sentence offset, each dependent = head + an
    independent random edge vector (so squared distances ~ tree distances) + a relation-specific
    vector in a 'relation' subspace (so edge directions encode the relation). Layer 0 is noise.
    upos is a deterministic function of the relation, so it is linearly decodable at the top."""
    rng = np.random.default_rng(seed)
    k_struct, k_rel = d // 2, d // 4
    rel_vecs = {r: np.zeros(d) for r in RELS}
    for i, r in enumerate(RELS):
        v = rng.normal(size=k_rel)
        rel_vecs[r][k_struct:k_struct + k_rel] = v / np.linalg.norm(v) * 0.6
    vocab = 300
    static = rng.normal(size=(vocab, d)).astype(dtype)
    b = _Builder(vocab, d, rng)
    ex_rows = []
    ex_id = 0
    for split, n in splits:
        for _ in range(n):
            length = int(rng.integers(min_len, max_len + 1))
            heads = random_tree(length, rng)
            deprels = [("root" if h == 0 else RELS[int(rng.integers(0, len(RELS)))]) for h in heads]
            upos = [UPOS[RELS.index(r) % len(UPOS)] if r != "root" else "VERB" for r in deprels]
            words = [f"w{int(rng.integers(0, 40))}" for _ in range(length)]
            # tree embedding, from the root down
            x = [None] * length
            base = np.zeros(d)
            base[:k_struct] = rng.normal(size=k_struct) * 0.3
            pending = [i for i in range(length) if heads[i] == 0]
            for i in pending:
                x[i] = base.copy()
            while pending:
                h = pending.pop()
                for c in range(length):
                    if heads[c] == h + 1:
                        e = np.zeros(d)
                        e[:k_struct] = rng.normal(size=k_struct) / np.sqrt(k_struct)
                        x[c] = x[h] + e + rel_vecs[deprels[c]]
                        pending.append(c)
            pos = 0
            b.add(ex_id, pos, 1, "[CLS]", -1, True, False, [rng.normal(size=d) for _ in range(n_layers)])
            pos += 1
            for wi, w in enumerate(words):
                n_sub = 1 + (wi % 3 == 2)
                for k in range(n_sub):
                    vecs = []
                    for L in range(n_layers):
                        wgt = L / max(n_layers - 1, 1)
                        vecs.append(wgt * x[wi] + (1 - wgt) * rng.normal(size=d) + noise * rng.normal(size=d))
                    tid = 10 + (int(w[1:]) * 3 + k) % 250
                    b.add(ex_id, pos, tid, w if k == 0 else "##s", wi, False, False, vecs)
                    pos += 1
            b.add(ex_id, pos, 2, "[SEP]", -1, True, False, [rng.normal(size=d) for _ in range(n_layers)])
            pos += 1
            row = _example_fixed(ex_id, words, None, True, pos)
            row.update({"sent_id": f"s{ex_id}", "split": split, "original_text": row["text"], "upos": upos,
                        "xpos": upos, "lemmas": words, "heads": heads, "deprels": deprels,
                        "genre": "news" if ex_id % 2 else "web"})
            ex_rows.append(row)
            ex_id += 1
    examples = pa.Table.from_pylist(ex_rows)
    return FakeStore(_manifest("conllu", "base", range(n_layers), d), b.tokens_table(), examples,
                     b.hidden(n_layers, dtype), static)


def write_real_store(fake: FakeStore, path: str, chunk_rows: int = 64, dtype: str = "float32") -> str:
    """Write a fake store's contents as a real on-disk store with pipeline.store.writer (one shard)."""
    from pipeline.store.writer import ShardWriter, create_store, write_manifest, write_static_embeddings
    from schemas.manifest import Manifest, ShardPlan, ShardRecord

    n = fake.tokens.num_rows
    d = fake.layer(fake.layers[0], [0]).shape[1]
    vocab = fake._static.shape[0]
    padded = -(-n // chunk_rows) * chunk_rows
    plan = ShardPlan(chunk_rows=chunk_rows, n_rows=padded, shards=[ShardRecord(
        shard_id=0, example_start=0, example_end=fake.examples.num_rows, row_start=0, n_tokens=n,
        n_rows_padded=padded)])
    m = fake.manifest
    manifest = Manifest(
        created_at="2026-01-01T00:00:00+00:00", config_fingerprint="fp",
        model={"name": m["model"]["name"], "architecture": "FakeModel", "model_type": "fake",
               "content_hash": "x", "n_layers": max(fake.layers), "d_model": d, "vocab_size": vocab,
               "dtype": "float32"},
        tokenizer={"name": "fake", "cls": "Fake", "content_hash": "x", "padding_side": "right",
                   "model_max_length": 512},
        source={"path": "fake", "format": m["source"]["format"], "fingerprint": "x",
                "n_examples": fake.examples.num_rows, "columns": []},
        variant=m["variant"], keep="all", layers=list(fake.layers), dtype=dtype, chunk_rows=chunk_rows,
        codec="none", max_length=512,
    )
    create_store(path, manifest, plan, d_model=d, vocab_size=vocab)
    w = ShardWriter(path, plan.shards[0], layers=list(fake.layers), dtype=dtype, chunk_rows=chunk_rows,
                    config_fingerprint="fp")
    block = np.stack([fake._hidden[L] for L in fake.layers]).astype(dtype)
    for i in range(0, n, 50):
        w.submit(np.ascontiguousarray(block[:, i:i + 50]))
    w.finish(fake.tokens, fake.examples)
    write_static_embeddings(path, fake._static, fingerprint="fp")
    manifest.complete = True
    manifest.completed_at = "2026-01-01T00:00:01+00:00"
    write_manifest(path, manifest)
    return path


def keep_only_targets(fake: FakeStore) -> FakeStore:
    """The same store as extracted with --keep targets: only is_target token rows."""
    mask = fake.tokens.column("is_target").to_numpy(zero_copy_only=False).astype(bool)
    rows = np.flatnonzero(mask)
    tokens = fake.tokens.filter(pa.array(mask))
    tokens = tokens.set_column(tokens.schema.get_field_index("row"), "row", pa.array(np.arange(len(rows)), pa.int64()))
    hidden = {L: x[rows] for L, x in fake._hidden.items()}
    manifest = dict(fake.manifest, keep="targets")
    return FakeStore(manifest, tokens, fake.examples, hidden, fake._static)
