"""No local VAE: reloading one fails loudly (see sd_models)."""

from modules import sd_models

unspecified = object()
vae_dict = {}


def reload_vae_weights(sd_model=None, vae_file=unspecified):
    sd_models.load_attempts.append("reload_vae_weights")
    raise sd_models.NoCheckpoint("no VAE loaded: the stand-in WebUI has no local model")
