"""PyTorch references for the benchmarks: the same models as jaxtrain's, written the way a
PyTorch user would (eager mode, fused scaled_dot_product_attention), with the same
shapes, the same losses and the same optimizer (global-norm clipping, then AdamW).
They are exact twins: `load_exported` reads a `jaxtrain export` file into one, whose
outputs match jaxtrain's to float32 rounding (tests/test_export.py).
"""

import json
import math

import torch
import torch.nn.functional as F
from torch import nn

# models/vae.py's ACTIVATION_FNS; Flax's gelu is the tanh approximation.
ACTIVATIONS = {"relu": nn.ReLU, "gelu": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU,
               "elu": nn.ELU}
# Flax's LayerNorm epsilon (PyTorch's default is 1e-5).
LAYER_NORM_EPS = 1e-6


class TorchVAE(nn.Module):
    """models/vae.py's class-conditional VAE, by default its defaults: 794-512-256
    encoder, latent 32, a decoder whose every layer also sees the one-hot class (42-512,
    522-1024, 1034-784), SiLU between layers, a learned Gaussian prior p(z | c) per
    class, Bernoulli likelihood. The other settings as in models/configs.py:VAEConfig
    (condition "latent": a projection of the class added to z; prior "standard")."""

    PRIOR_SCALE = 10.0  # as models/vae.py stores the prior

    def __init__(self, encoder=(512, 256), decoder=(512, 1024), latent=32, classes=10,
                 activation="silu", condition="every-layer", prior="class",
                 likelihood="bernoulli", image_shape=(28, 28, 1)):
        super().__init__()
        self.classes, self.latent = classes, latent
        self.condition, self.prior_kind, self.likelihood = condition, prior, likelihood
        self.act = ACTIVATIONS[activation]()
        image_dim = math.prod(image_shape)
        self.image_shape = tuple(image_shape)
        self.encoder = mlp([image_dim + classes, *encoder], activation)
        self.mean = nn.Linear(encoder[-1], latent)
        self.logvar = nn.Linear(encoder[-1], latent)
        widths = [latent, *decoder, image_dim]
        extra = classes if condition == "every-layer" else 0  # each layer's one-hot input
        self.decoder = nn.ModuleList(nn.Linear(a + extra, b)
                                     for a, b in zip(widths[:-1], widths[1:]))
        if condition == "latent":
            self.class_proj = nn.Linear(classes, latent)
        if prior == "class":
            self.prior_mean = nn.Embedding(classes, latent)
            self.prior_logvar = nn.Embedding(classes, latent)
            nn.init.zeros_(self.prior_mean.weight)
            nn.init.zeros_(self.prior_logvar.weight)

    def prior(self, label):
        """p(z | c) as (mean, logvar) [B, Z]."""
        if self.prior_kind == "standard":
            zeros = torch.zeros(*label.shape, self.latent, device=label.device)
            return zeros, zeros
        return (self.PRIOR_SCALE * self.prior_mean(label),
                self.PRIOR_SCALE * self.prior_logvar(label))

    def encode(self, x, label):
        onehot = F.one_hot(label, self.classes).float()
        h = self.encoder(torch.cat([x, onehot], -1))
        return self.mean(h), self.logvar(h)

    def decode(self, z, label):
        """Pixel logits (gaussian: the outputs) [B, D]."""
        onehot = F.one_hot(label, self.classes).float()
        h = z + self.class_proj(onehot) if self.condition == "latent" else z
        for i, layer in enumerate(self.decoder):
            h = layer(torch.cat([h, onehot], -1) if self.condition == "every-layer" else h)
            h = self.act(h) if i < len(self.decoder) - 1 else h
        return h

    def images(self, z, label):
        """Images [B, H, W, C] in [0, 1], as models/vae.py:VAEFamily.generate: the
        Bernoulli mean, or the clipped output."""
        out = self.decode(z, label)
        out = torch.sigmoid(out) if self.likelihood == "bernoulli" else out.clamp(0.0, 1.0)
        return out.reshape(-1, *self.image_shape)

    def forward(self, x, label):
        mean, logvar = self.encode(x, label)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.decode(z, label), (mean, logvar), self.prior(label)


def mlp(widths, activation="silu"):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def vae_loss(model, x, label):
    """Mean negative ELBO in nats per image."""
    logits, (mean, logvar), (prior_mean, prior_logvar) = model(x, label)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * torch.sum(prior_logvar - logvar - 1.0
                         + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp())
    return (nll + kl) / len(x)


class Block(nn.Module):
    """Pre-LayerNorm block: causal self-attention, then a GELU MLP; dropout after each."""

    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.ln2 = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (q, k, v))
        p = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        h = h.transpose(1, 2).reshape(b, t, d)
        x = x + F.dropout(self.proj(h), self.dropout, self.training)
        h = self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x + F.dropout(h, self.dropout, self.training)

    def cached(self, x, past):
        """The block at the next positions x [B, t, D], attending to them and to `past`,
        the keys and values [B, H, s, Dh] of the positions before (None: none); returns
        (out, the keys and values of all s + t positions). Eval mode."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        h = F.scaled_dot_product_attention(q, k, v, is_causal=past is None)
        x = x + self.proj(h.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh")), (k, v)


class TorchTransformer(nn.Module):
    """models/transformer.py's decoder-only Transformer: learned positions, pre-LN blocks
    (tanh GELU, attention scaled by 1/sqrt(Dh), causal), final LayerNorm, untied output
    projection. Digits: tokens are 2x2 patches 0..15 after a class token 16 + c;
    text: token i is the run's vocabulary's i-th character."""

    def __init__(self, vocab, out, context, layers=4, d=128, heads=4, dropout=0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(context, d) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(d, out)

    def forward(self, tokens):
        x = self.drop(self.embed(tokens) + self.pos[: tokens.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    @torch.no_grad()
    def generate(self, prompt, length, cache=True):
        """`length` greedy tokens [B, length] after `prompt` [B, P], eval mode. With
        `cache`, a key/value cache (each new token one position through the blocks, the
        keys and values grown by torch.cat), within the context; without, nanoGPT's
        `generate`: the last `context` tokens through the whole model for each token."""
        context, tokens, past = self.pos.shape[0], prompt, None
        if cache and prompt.shape[1] + length - 1 > context:
            raise ValueError(f"a cached generation stays within the context ({context})")
        x = prompt
        for _ in range(length):
            if cache:
                at = tokens.shape[1] - x.shape[1]  # the first new position
                h = self.embed(x) + self.pos[at:at + x.shape[1]]
                past = past or [None] * len(self.blocks)
                for i, block in enumerate(self.blocks):
                    h, past[i] = block.cached(h, past[i])
                logits = self.head(self.ln(h[:, -1]))
            else:
                logits = self(tokens[:, -context:])[:, -1]
            x = logits.argmax(-1, keepdim=True)  # [B, 1]
            tokens = torch.cat([tokens, x], 1)
        return tokens[:, prompt.shape[1]:]


def lm_loss(model, inputs, targets):
    """Mean nats per token."""
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_step(model, loss_fn, lr=1e-3, weight_decay=1e-4, clip=1.0):
    """An eager train step (clip by global norm, AdamW) like jaxtrain's."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def step(*batch):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, *batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    step.optimizer = opt  # for a schedule (benchmarks/torch_char_script.py)
    return step


# --- Reading a `jaxtrain export` file (training/commands/export.py; docs/export.md). ---


def load_exported(path, device="cpu"):
    """(the PyTorch twin in eval mode, the file's metadata) of a `jaxtrain export` file:
    a TorchVAE or a TorchTransformer of the run's settings, holding its EMA parameters."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        if not meta.get("format", "").startswith("jaxtrain.export/"):
            raise ValueError(f"{path} is not a jaxtrain export: make one with `jaxtrain export`")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    c = json.loads(meta["config"])["model_config"]
    if meta["model"] == "vae":
        if c.get("network", "mlp") != "mlp":
            raise ValueError(f"{path} holds a --network {c['network']} VAE; the PyTorch twin "
                             "here is the MLP's (the safetensors file itself loads anywhere)")
        if c.get("pixel_model", "independent") != "independent":
            raise ValueError(f"{path} holds a --pixel-model {c['pixel_model']} VAE; the PyTorch "
                             "twin here has independent pixels (the file itself loads anywhere)")
        side = math.isqrt(c.get("image_dim", 0))  # runs exported before image shapes
        model = TorchVAE(c["encoder_widths"], c["decoder_widths"], c["latent_dim"],
                         c["num_classes"], c["activation"], c["condition"], c["prior"],
                         c["likelihood"], c.get("image_shape") or (side, side, 1))
        state = vae_state(tensors)
    else:
        model = TorchTransformer(c["vocab_size"], c["output_size"], c["context"], c["layers"],
                                 c["d_model"], c["heads"], c["dropout"])
        state = transformer_state(tensors, c["layers"])
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval(), meta


def _linear(tensors, name, inputs=1):
    """A Flax Dense's kernel [in, out] and bias as torch Linear's weight [out, in] and
    bias; an attention projection's kernel ([D, H, Dh], or `inputs` 2: [H, Dh, D]) flat."""
    kernel = tensors[f"{name}/kernel"]
    return {"weight": kernel.reshape(math.prod(kernel.shape[:inputs]), -1).T.contiguous(),
            "bias": tensors[f"{name}/bias"].reshape(-1)}


def _prefixed(prefix, state):
    return {f"{prefix}.{k}": v for k, v in state.items()}


def vae_state(tensors):
    """TorchVAE's state_dict from models/vae.py's parameters (encoder Dense_i is the
    Sequential's layer 2i, between activations)."""
    state = {**_prefixed("mean", _linear(tensors, "mean")),
             **_prefixed("logvar", _linear(tensors, "logvar"))}
    for part in ("encoder", "decoder"):
        layers = sorted({k.split("/")[1] for k in tensors if k.startswith(f"{part}/")},
                        key=lambda n: int(n.split("_")[1]))
        for i, layer in enumerate(layers):
            index = 2 * i if part == "encoder" else i
            state.update(_prefixed(f"{part}.{index}", _linear(tensors, f"{part}/{layer}")))
    state.update(_prefixed(f"decoder.{len(layers)}", _linear(tensors, "out")))
    if "class_proj/kernel" in tensors:
        state.update(_prefixed("class_proj", _linear(tensors, "class_proj")))
    for name in ("prior_mean", "prior_logvar"):
        if f"{name}/embedding" in tensors:
            state[f"{name}.weight"] = tensors[f"{name}/embedding"]
    return state


def transformer_state(tensors, layers):
    """TorchTransformer's state_dict from models/transformer.py's parameters, blocks
    unrolled (Block_0, Block_1, ...): the query, key and value kernels [D, H, Dh] side by
    side as the fused qkv weight, the heads' order kept."""
    def norm(name):
        return {"weight": tensors[f"{name}/scale"], "bias": tensors[f"{name}/bias"]}

    state = {"embed.weight": tensors["Embed_0/embedding"], "pos": tensors["pos_embedding"],
             **_prefixed("ln", norm("LayerNorm_0")), **_prefixed("head", _linear(tensors,
                                                                               "Dense_0"))}
    for i in range(layers):
        block, attention = f"Block_{i}", f"Block_{i}/MultiHeadDotProductAttention_0"
        qkv = [_linear(tensors, f"{attention}/{n}") for n in ("query", "key", "value")]
        state.update(_prefixed(f"blocks.{i}", {
            **_prefixed("ln1", norm(f"{block}/LayerNorm_0")),
            "qkv.weight": torch.cat([p["weight"] for p in qkv]),
            "qkv.bias": torch.cat([p["bias"] for p in qkv]),
            **_prefixed("proj", _linear(tensors, f"{attention}/out", inputs=2)),
            **_prefixed("ln2", norm(f"{block}/LayerNorm_1")),
            **_prefixed("fc", _linear(tensors, f"{block}/Dense_0")),
            **_prefixed("fc_out", _linear(tensors, f"{block}/Dense_1"))}))
    return state
