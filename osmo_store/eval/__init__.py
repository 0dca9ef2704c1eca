"""Layer 7: evals on the store: datasets, model and agent calls, eval functions, config
identity, planning, recording, merging and summaries."""

#: the model endpoint when neither the caller nor ``$OSMO_BASE_URL`` names one (here, not in
#: ``config``, so that the command line can show it without loading the eval machinery)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
