"""The configuration tree: typed dataclasses with their defaults, one comment per key.

Defaults only; how files and overrides are merged into the tree is ``loading.py``, which values
are refused is ``validation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the authors' default (their torchvision ResNet-50 baseline)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_TOWERS = ("resnet50", "resnet101")  # image towers whose pixel statistics default to ImageNet's

# string keys whose values are names: matched case-insensitively (stored lower-case); a tuple lists
# the valid values
ENUM_KEYS: dict[str, tuple[str, ...] | None] = {
    "reproduce": ("ours", "authors"),
    "model.gru.onehot": None,
    "dataloader.sampler": ("balanced", "authors"),
    "input.erase_fill": ("zero", "mean"),
    "test.amp": ("auto", "bf16", "fp16", "off"),
}  # SOLVER.* names and EMBED_HEAD are checked with their exact spelling by config_problems

PACKAGED_CONFIGS = Path(__file__).parent.parent / "configs"  # src/textreid/configs


class ConfigError(ValueError):
    """A configuration file or override that cannot be applied; the message names the key."""


# --------------------------------------------------------------------------- model
@dataclass
class GRUConfig:
    onehot: str = "yes"  # word vectors: "yes" = learned embedding; "clip_vit" = frozen per-word table
    embedding_size: int = 512  # GRU input width (word-vector width after the optional linear layer)
    num_units: int = 512  # GRU hidden size per direction (output is 2x this)
    vocabulary_size: int = 12000  # learned embedding: number of words; table: its width (authors' quirk)
    dropout_keep_prob: float = 1.0  # authors' name; dropout between GRU layers = 1 - this
    max_length: int = 100  # captions are truncated to this many words
    num_layer: int = 1  # GRU layers
    word_table: str = ""  # .npy [V, E] word-vector table; "" = <dataset dir>/clip_vocab_vit.npy
    exact_max: bool = False  # True: max over valid steps only; False: authors' max(0, max_t h_t) quirk
    batch_max: bool = False  # True: the authors' exact batch-dependent max over zero-padded outputs (REPRODUCE authors)


@dataclass
class ResNetConfig:
    res5_stride: int = 2  # stride of the last stage (paper: 1 -> 24x8 map at 384x128)
    res5_dilation: int = 1  # kept for the authors' files; only 1 is supported
    pretrained: str = ""  # authors' key; alias of MODEL.PRETRAINED when set
    layers: list[int] = field(default_factory=list)  # blocks per stage; [] = the named model's
    width: int = 0  # CLIP ResNet stem width; 0 = the named model's (RN50/RN101: 64)
    output_dim: int = 0  # attention-pool output dim; 0 = the named model's (RN50: 1024, RN101: 512)
    heads: int = 0  # attention-pool heads; 0 = the named model's


@dataclass
class ViTConfig:
    patch_size: int = 0  # 0 = the named model's (ViT-B/16: 16)
    width: int = 0  # transformer width; 0 = the named model's
    layers: int = 0  # transformer depth; 0 = the named model's
    heads: int = 0  # attention heads; 0 = the named model's
    output_dim: int = 0  # projection dim; 0 = the named model's
    stride: int = 0  # patch-embedding stride; 0 = patch_size (no overlap), < patch_size overlaps


@dataclass
class TextTransformerConfig:
    context_length: int = 77  # CLIP BPE tokens per caption (longer captions are truncated)
    width: int = 0  # 0 = the CLIP model's
    layers: int = 0  # 0 = the CLIP model's
    heads: int = 0  # 0 = the CLIP model's
    output_dim: int = 0  # text projection dim; 0 = the CLIP model's
    vocab_size: int = 49408  # CLIP BPE vocabulary


@dataclass
class EmbeddingConfig:
    embed_head: str = "simple"  # "simple" (instance + global alignment) or "moco"
    feature_size: int = 256  # joint embedding dim; 0 = no embedding layers (the towers' outputs, IRRA/RDE)
    dropout_prob: float = 0.0  # dropout before the embedding layers
    epsilon: float = 0.1  # label smoothing of the instance loss


@dataclass
class MocoConfig:
    k: int = 2048  # queue length; must be a multiple of the (global) batch size
    m: float = 0.999  # momentum of the key encoders
    fc: bool = False  # separate 2-layer MLP projections for the contrastive branch
    temperature: float = 0.07  # InfoNCE temperature


@dataclass
class LossConfig:
    instance: float = 1.0  # identity classification with label smoothing
    global_align: float = 1.0  # the paper's global alignment loss
    infonce: float = 1.0  # momentum-queue InfoNCE (moco head only)
    sdm: float = 0.0  # similarity distribution matching (IRRA)
    itc: float = 0.0  # CLIP-style in-batch contrastive loss
    sdm_temperature: float = 0.02  # SDM / ITC logit temperature
    id: float = 0.0  # IRRA's identity loss (linear classifier, mean of the two cross-entropies)
    mlm: float = 0.0  # IRRA's implicit relation reasoning (masked-token prediction through the image)
    tal: float = 0.0  # RDE's triplet alignment loss on the global embeddings
    tse: float = 0.0  # RDE's triplet alignment loss on the token-selection embeddings


@dataclass
class IRRAConfig:
    cmt_depth: int = 4  # layers of the cross-modal transformer (training only)
    mask_prob: float = 0.15  # share of caption tokens to predict; of those 80% masked, 10% random, 10% kept


@dataclass
class RDEConfig:
    select_ratio: float = 0.3  # share of tokens the token-selection branch keeps (by class/EOT attention)
    tse_dim: int = 1024  # width of the token-selection embedding
    tau: float = 0.015  # triplet alignment loss temperature
    margin: float = 0.1  # triplet alignment loss margin
    retrieval_weight: float = 0.5  # test-time similarity = (1 - w) global + w token-selection
    text_aug: bool = True  # perturb training captions: 20% of tokens masked / replaced / deleted


@dataclass
class ModelConfig:
    device: str = "cpu"  # authors' key, ignored: the device is chosen on the command line
    visual_model: str = "m_resnet50"  # registry name of the image tower
    textual_model: str = "bigru"  # registry name of the text tower
    num_classes: int = 0  # identities of the training split; 0 = read from the data
    freeze: bool = False  # freeze both towers (only the heads train)
    weight: str = "imagenet"  # authors' key; "imagenet"/"clip" mean "load MODEL.PRETRAINED"
    pretrained: str = ""  # weight file; "" = where the authors' code reads it (ROOT/pretrained/...); "none" = random
    reinit_linear: bool = False  # moco head only: the authors' defect, re-init every nn.Linear after loading
    recipe: str = "textreid"  # training recipe: "textreid" (the paper), "irra" or "rde"
    gru: GRUConfig = field(default_factory=GRUConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)
    vit: ViTConfig = field(default_factory=ViTConfig)
    text_transformer: TextTransformerConfig = field(default_factory=TextTransformerConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    moco: MocoConfig = field(default_factory=MocoConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    irra: IRRAConfig = field(default_factory=IRRAConfig)
    rde: RDEConfig = field(default_factory=RDEConfig)


# --------------------------------------------------------------------------- data
@dataclass
class InputConfig:
    height: int = 384  # image height fed to the visual tower
    width: int = 128  # image width
    pixel_mean: list[float] = field(default_factory=list)  # [] = the tower family's (CLIP's, or ImageNet's)
    pixel_std: list[float] = field(default_factory=list)  # [] = the tower family's
    padding: int = 10  # pad before the random crop (training)
    use_aug: bool = True  # flip + pad/crop + random erasing during training
    erase_fill: str = "zero"  # random-erasing fill: "zero" (= the mean after normalising) or "mean" (authors')


@dataclass
class DatasetsConfig:
    train: list[str] = field(default_factory=lambda: ["cuhkpedes_train"])  # <dataset>_<split>
    val: list[str] = field(default_factory=lambda: ["auto"])  # model selection; "auto" = <train>_val if any; [] = none
    test: list[str] = field(default_factory=lambda: ["cuhkpedes_test"])  # reported once at the end
    use_onehot: bool = True  # authors' layout: use the shipped `onehot` word ids
    dir: str = ""  # dataset folder; "" = <root>/datasets/<dataset folder name>
    annotations: str = ""  # custom layout: JSONL/CSV file of (image path, person id, caption)
    noise_file: str = ""  # RDE's noise index .npy: training record i gets the caption of record file[i]
    noise_rate: float = 0.0  # else: shuffle this share of training captions among themselves ...
    noise_seed: int = 0  # ... with this seed


@dataclass
class DivisionConfig:
    enabled: bool = False  # RDE's consensus clean-pair division before every epoch (any model)
    start_epoch: int = 0  # epochs trained on every pair before the first division
    tau: float = 0.015  # per-pair triplet alignment loss used to rank pairs (as RDE's)
    margin: float = 0.1
    gmm_max_iter: int = 10  # two-component GaussianMixture on the min-max scaled losses
    gmm_tol: float = 0.01
    gmm_reg_covar: float = 0.0005
    batch_size: int = 0  # pairs per loss batch; 0 = SOLVER.IMS_PER_BATCH


@dataclass
class DataloaderConfig:
    num_workers: int = 4  # loader processes (0 = load in the main process)
    ims_per_id: int = 4  # K captions per identity in a batch (P = batch / K identities)
    sampler: str = "balanced"  # "balanced": every caption once per epoch; "authors": their floor(n/K) groups


@dataclass
class SolverConfig:
    ims_per_batch: int = 128  # global batch size (split across processes)
    num_epochs: int = 80
    checkpoint_period: int = 40  # epochs between periodic checkpoints (best and last always kept)
    evaluate_period: int = 1  # epochs between validations
    optimizer: str = "Adam"  # "Adam", "AdamW" or "SGD"
    base_lr: float = 1e-4
    bias_lr_factor: float = 2.0  # biases get this times the lr ...
    weight_decay: float = 4e-5
    weight_decay_bias: float = 0.0  # ... and this weight decay
    adam_alpha: float = 0.9  # Adam beta1 (authors' name)
    adam_beta: float = 0.999  # Adam beta2
    adam_eps: float = 1e-8  # Adam/AdamW epsilon (IRRA and RDE: 1e-3)
    lr_factor: float = 1.0  # lr multiplier of the recipe's freshly initialised modules (IRRA/RDE: 5)
    sgd_momentum: float = 0.9
    lrscheduler: str = "step"  # "step" or "cosine"
    warmup_factor: float = 0.1  # lr starts at this times base_lr ...
    warmup_epochs: int = 5  # ... and rises linearly over this many epochs
    warmup_method: str = "linear"  # "linear" or "constant"
    gamma: float = 0.1  # step decay factor
    steps: list[int] = field(default_factory=lambda: [40, 70])  # epochs at which lr *= gamma
    power: float = 0.9  # authors' key (poly schedule), unused
    target_lr: float = 0.0  # cosine schedule floor
    amp: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "bf16", "fp16" or "off"
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    seed: int = 0  # seeds python, numpy and torch; the sampler derives its order from it
    deterministic: bool = False  # deterministic algorithms (bit-exact resume on CPU)
    sync_bn: bool = False  # SyncBatchNorm under torch.distributed
    channels_last: bool = True  # NHWC images + conv weights (oneDNN's preferred layout; README: measured vs NCHW)
    recompute_stages: int = 0  # ResNet stages (1 = stem, 2 = + layer1, ... 5) recomputed in backward: less memory, same results


@dataclass
class TestConfig:
    ims_per_batch: int = 128  # evaluation batch size
    rerank: bool = False  # add the authors' Jaccard re-ranking term
    rerank_k: int = 5  # neighbours in the re-ranking sets
    rerank_alpha: float = 0.05  # weight of the Jaccard term
    amp: str = "off"  # evaluation precision: "off" (fp32, default on every device), "auto", "bf16", "fp16"
    every_epoch: bool = False  # also evaluate TEST after every epoch (the authors' protocol: selection on test)


@dataclass
class Config:
    root: str = "./"  # data live under <root>/datasets/
    output_dir: str = "output"  # checkpoints, logs, metrics
    dtype: str = "float32"  # authors' key, unused
    amp_verbose: bool = False  # authors' key, unused
    reproduce: str = "ours"  # "authors": their exact training (sampler, erasing fill, re-init, caption cap, fp32)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    dataloader: DataloaderConfig = field(default_factory=DataloaderConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    division: DivisionConfig = field(default_factory=DivisionConfig)
