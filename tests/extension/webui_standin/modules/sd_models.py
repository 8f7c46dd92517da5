"""No local model: loading one fails loudly, so a test that gets images proves they came from the cloud."""

checkpoints_list = {}
checkpoint_aliases = {}
load_attempts: list[str] = []


class NoCheckpoint(RuntimeError):
    """What the stand-in raises wherever the WebUI would load a local model."""


def get_closet_checkpoint_match(search_string):
    return None


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    load_attempts.append("reload_model_weights")
    raise NoCheckpoint("no checkpoint loaded: the stand-in WebUI has no local model")


def apply_token_merging(sd_model, token_merging_ratio):
    pass
