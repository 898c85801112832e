"""Names the command line needs before torch is imported (``captum-entropy --help`` stays fast)."""

ZOO_MODELS = ("minilm", "transformer", "lstm", "cnn")
