"""Text data: the offline tokenizer (round trip, cache), and the BBC News datamodule's splits."""

import numpy as np
import pytest
from conftest import compose_cfg

from transferlab.data.tokenizer import SPECIAL_TOKENS, train_tokenizer

pytest.importorskip("tokenizers")

CORPUS = [f"the {a} {b} reported {n} new results on tuesday" for n in range(40)
          for a, b in (("market", "traders"), ("team", "coach"), ("minister", "party"))]
BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_tokenizer_round_trip_and_special_ids(tmp_path, kind):
    tok = train_tokenizer(CORPUS, kind=kind, vocab_size=300, cache_dir=tmp_path, corpus="toy")
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    text = "the market traders reported 7 new results on tuesday"
    ids = tok.encode(text)
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.decode(ids).strip() == text
    batch = tok.encode_batch([text, "the team"], max_length=6)
    assert batch.dtype == np.int64 and batch.shape == (2, 6)
    assert batch[0].tolist() == ids[:5] + [tok.sep_id]  # truncated, still closed by [SEP]
    assert batch[1].tolist() == tok.encode("the team") + [tok.pad_id] * (6 - len(tok.encode("the team")))
    assert set(tok.special_ids) == set(range(len(SPECIAL_TOKENS)))


def test_a_damaged_tokenizer_cache_is_trained_again_and_replaced(tmp_path, caplog):
    first = train_tokenizer(CORPUS, vocab_size=300, cache_dir=tmp_path, corpus="toy")
    first.path.write_text('{"version": "1.0", "truncat')  # cut short (a full disk, a killed copy)
    again = train_tokenizer(CORPUS, vocab_size=300, cache_dir=tmp_path, corpus="toy")
    assert not again.cache_hit and again.path == first.path
    assert "is not readable" in caplog.text and "training it again" in caplog.text
    assert train_tokenizer(CORPUS, vocab_size=300, cache_dir=tmp_path, corpus="toy").cache_hit  # the file was rewritten


def test_tokenizer_cache_hit_and_rebuild_on_config_change(tmp_path):
    first = train_tokenizer(CORPUS, vocab_size=300, cache_dir=tmp_path, corpus="toy")
    assert not first.cache_hit and first.path.is_file()
    mtime = first.path.stat().st_mtime_ns
    second = train_tokenizer(CORPUS, vocab_size=300, cache_dir=tmp_path, corpus="toy")
    assert second.cache_hit and second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert second.encode(CORPUS[5]) == first.encode(CORPUS[5])
    smaller = train_tokenizer(CORPUS, vocab_size=120, cache_dir=tmp_path, corpus="toy")
    assert not smaller.cache_hit and smaller.path != first.path and smaller.vocab_size <= 120
    other_corpus = train_tokenizer(CORPUS[:60], vocab_size=300, cache_dir=tmp_path, corpus="toy")
    assert not other_corpus.cache_hit and other_corpus.path != first.path


@pytest.fixture(scope="module")
def bbc(tmp_path_factory):
    from transferlab.runner.build import build_datamodule

    def make(*overrides):
        cfg = compose_cfg(["data=bbc_news", "data.max_length=32", "data.tokenizer.vocab_size=2000", *overrides],
                          tmp_path_factory.mktemp("bbc"))
        dm = build_datamodule(cfg)
        dm.setup("fit")
        return dm

    return make


@pytest.mark.slow  # trains the tokenizer on the corpus once (cached for the next test)
def test_bbc_news_split_counts_and_stable_labels(bbc):
    dm = bbc("data.labels_per_class=10")
    spec = dm.spec
    assert spec.modality == "text" and spec.input_shape == (32,) and spec.class_names == tuple(BBC_COUNTS)
    assert spec.vocab_size == dm.vocab_size <= 2000 and spec.pad_id == dm.pad_id == 0 and spec.mask_id == dm.mask_id == 4
    x, y = dm.train_set.tensors
    assert x.dtype.is_floating_point is False and x.shape == (50, 32)
    assert np.bincount(y.numpy()).tolist() == [10] * 5
    # the fixed test split holds 20% of each class; validation 10% of the rest
    test_counts = np.bincount(dm.test_set.tensors[1].numpy()).tolist()
    assert test_counts == [round(n * 0.2) for n in BBC_COUNTS.values()]
    val_counts = np.bincount(dm.val_set.tensors[1].numpy()).tolist()
    assert val_counts == [round((n - round(n * 0.2)) * 0.1) for n in BBC_COUNTS.values()]
    assert (x[:, 0] == dm.tokenizer.cls_id).all()


def test_bbc_news_test_split_fixed_across_seeds_and_class_subset(bbc):
    a, b = bbc("data.labels_per_class=10", "seed=0"), bbc("data.labels_per_class=10", "seed=1")
    assert a.test_set.tensors[0].equal(b.test_set.tensors[0])
    assert not a.train_set.tensors[0].equal(b.train_set.tensors[0])
    sub = bbc("data.classes=[3,1]")
    assert sub.spec.class_names == ("sports", "entertainment")
    train_counts = np.bincount(sub.train_set.tensors[1].numpy()).tolist()
    assert train_counts == [511 - round(511 * 0.2) - round((511 - round(511 * 0.2)) * 0.1),
                            386 - round(386 * 0.2) - round((386 - round(386 * 0.2)) * 0.1)]
    assert sub.decode(sub.encode("Chelsea won the match")[0]) == "chelsea won the match"


def test_bbc_news_mlm_recipe_composes_pretrain_then_transfer():
    cfg = compose_cfg(["experiment=bbc_news_mlm"])
    stages = cfg.task.stages
    assert list(stages) == ["pretrain", "finetune", "linear_probe", "scratch", "lora"]
    assert stages.pretrain.task.name == "masked" and stages.pretrain.data.labels_per_class is None
    assert stages.lora.peft.name == "lora" and stages.lora.init_from == "pretrain"
    assert all(stages[s].data.labels_per_class == 10 for s in ("finetune", "linear_probe", "scratch", "lora"))
    assert cfg.data.name == "bbc_news" and cfg.model.name == "transformer"
