"""The components of easel-shapes: exactly a Stable Diffusion pipeline's, scaled down.

AutoencoderKL with 4 latent channels, a CLIPTextModel behind the real CLIP tokenizer, a
cross-attention UNet2DConditionModel and SD's noise schedule (scaled_linear 0.00085-0.012 over
1000 steps), epsilon-prediction as in SD 1.x. Sizes live in ``Config`` so tests can build a tiny copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, DDPMScheduler, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from pipelines.clip_tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, MODEL_MAX_LENGTH, VOCAB_SIZE
from training.shapes import SIZE

SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
)


@dataclass(frozen=True)
class Config:
    """Model sizes and training hyper-parameters; the defaults are the shipped model's."""

    seed: int = 0
    norm_groups: int = 4  # few groups: flat colour regions keep their colour through GroupNorm
    # Autoencoder: three levels, so 64x64 pictures become 16x16x4 latents.
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_crop: int = 32  # trained on crops: 4x cheaper than whole pictures
    vae_lr: float = 2e-3
    vae_shape_weight: float = 10.0
    kl_weight: float = 1e-5
    # Text encoder: the 49408-token embedding dominates its size, so it stays narrow.
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    # UNet: convolutions at 16x16 and 8x8, cross-attention in the deepest ``attention_levels`` levels (and the
    # mid block). The shipped v1 has it at 4x4 only; a v2 with it at 8x8 too, 96 channels and v-prediction
    # scored no better on shapes and positions after the same 3400 steps (see the model card).
    unet_channels: tuple[int, ...] = (32, 64, 128)
    attention_levels: int = 1
    prediction_type: str = "epsilon"
    unet_heads: int = 4
    unet_steps: int = 3400
    unet_batch: int = 32
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    pool_size: int = 12000  # training pictures encoded once to latents for the UNet phase
    two_shape_prob: float = 0.1
    caption_dropout: float = 0.1  # empty prompts, so classifier-free guidance has an unconditional model
    # Another picture's caption on this share of the steps whose noise is below ``caption_swap_below``: where the
    # picture still shows its colours and shapes, it (not the prompt) must say what is there, or img2img at low
    # strength repaints the picture to a contradicting prompt (CFG multiplies the prompt's pull).
    caption_swap: float = 0.0
    caption_swap_below: int = 400
    noise_offset: float = 0.1  # lets flat backgrounds of any brightness follow the prompt, not the noise
    snr_gamma: float = 5.0  # low-noise steps weigh at most gamma/SNR (min-SNR): they teach little
    ema_decay: float = 0.995
    checkpoint_every: int = 100


def build_vae(cfg: Config) -> AutoencoderKL:
    k = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * k,
        up_block_types=("UpDecoderBlock2D",) * k,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=cfg.norm_groups,
        sample_size=SIZE,
    )


def build_text_encoder(cfg: Config) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=cfg.text_hidden,
            intermediate_size=4 * cfg.text_hidden,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=MODEL_MAX_LENGTH,
            hidden_act="quick_gelu",
            bos_token_id=BOS_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
            pad_token_id=EOS_TOKEN_ID,
        )
    )


def build_unet(cfg: Config) -> UNet2DConditionModel:
    plain = len(cfg.unet_channels) - cfg.attention_levels
    down = ("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * cfg.attention_levels
    return UNet2DConditionModel(
        sample_size=SIZE // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=cfg.norm_groups,
    )


def training_scheduler(cfg: Config) -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE, prediction_type=cfg.prediction_type, clip_sample=False)


def sampling_scheduler(cfg: Config) -> EulerAncestralDiscreteScheduler:
    """The shipped default (Euler a); the web UI swaps in others with ``Cls.from_config``."""
    return EulerAncestralDiscreteScheduler(**SCHEDULE, prediction_type=cfg.prediction_type,
                                           timestep_spacing="trailing")
