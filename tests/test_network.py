"""Optional checks against the real Hugging Face Hub: `python -m pytest -m network`.

Deselected by default (no machine in CI reaches the Hub); run them where the network is allowed.
"""

from __future__ import annotations

import pytest

from inspector import inspect_model


@pytest.mark.network
def test_gpt2_from_the_real_hub() -> None:
    report = inspect_model("openai-community/gpt2", token=False)
    assert report.parameters.total_params == 124_439_808
    assert report.checkpoint.sha and len(report.checkpoint.sha) == 40
