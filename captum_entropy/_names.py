"""Names shared across the package, torch-free (``captum-entropy --help`` reads them without importing
torch): the zoo's model names and the name and place of the prediction among the features."""

ZOO_MODELS = ("minilm", "transformer", "lstm", "cnn")

OUTPUT = "output"  # the feature name of the model's output (the predicted class's logit)
OUTPUT_DEPTH = 1.25  # where the prediction sits on the relative-depth axis: after the last layer (1.0)
Z95 = 1.96  # a 95 % interval is ± this many standard errors
