"""omni's tokenizers live at omni.tokenizers so that Hugging Face's top-level `tokenizers` package still imports."""

import tokenizers  # Hugging Face's (a dev dependency, so this always runs)

import omni.tokenizers


def test_both_tokenizers_packages_import_in_one_process():
    assert hasattr(tokenizers, "Tokenizer")  # the real HF package, not shadowed by ours
    assert "site-packages" in tokenizers.__file__
    assert hasattr(omni.tokenizers, "ImagePatchTokenizer")
    assert tokenizers is not omni.tokenizers
