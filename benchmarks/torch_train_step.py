"""Images/s of a PyTorch ResNet50 re-ID train step, the reference beside benchmarks/train_throughput.py.

One step = uint8 batch -> normalisation on the device -> torchvision's ResNet50 (weights=None, channels_last)
-> our head (pooled 2048 -> 1024 embedding -> 751-way classifier, in float32, as msml_jax/models/heads.py) ->
cross-entropy + batch-hard triplet loss (margin 0.3, l2-normalised embeddings) -> backward -> Adam. The batch is
P x K (K images per identity) and stays in device memory: no input pipeline.

dtype "bfloat16" = torch.autocast(bfloat16) around the backbone; "float32" = float32 with TF32 matmuls and
convolutions allowed (as JAX/XLA does by default on NVIDIA GPUs), so both peaks are tensor-core peaks.
FLOPs/image are counted by torch.utils.flop_counter.FlopCounterMode over one forward + backward (matmuls and
convolutions only; XLA's cost analysis in train_throughput.py also counts elementwise work, a few % more).

    python benchmarks/torch_train_step.py                                   # CUDA, the paper's settings
    python benchmarks/torch_train_step.py --compile                         # also torch.compile rows
    python benchmarks/torch_train_step.py --device cpu --sizes 64x32 --batch 8 --K 2 --steps 1 --warmup 1

Without torchvision it says so and uses the hand-written ResNet50 below (same layers, names and FLOPs).
"""

import argparse
import platform
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("torch_train_step.py needs PyTorch (pip install torch torchvision)")

# Dense peak FLOP/s by device-name substring and dtype (vendor datasheets; float32 = TF32 tensor cores).
PEAKS = {
    "H100": {"bfloat16": 989e12, "float32": 495e12},
    "H200": {"bfloat16": 989e12, "float32": 495e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 (as msml_jax.models.IMAGENET_MEAN)
IMAGENET_STD = (58.395, 57.12, 57.375)


# --- ResNet50 in plain torch.nn: torchvision's architecture and parameter names, for machines without it. ---


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, inplanes, width, stride=1):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class PlainResNet50(nn.Module):
    """torchvision.models.resnet50(weights=None) rebuilt: same modules, state_dict keys and initialisation."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        inplanes = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            layer = []
            for j in range(blocks):
                layer.append(Bottleneck(inplanes, width, stride=2 if i > 0 and j == 0 else 1))
                inplanes = width * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50_backbone():
    """(ResNet50 without its classifier, source name): torchvision's if installed, else PlainResNet50."""
    try:
        import torchvision
    except ImportError:
        net, source = PlainResNet50(), "plain_resnet50"
    else:
        net, source = torchvision.models.resnet50(weights=None), "tv_resnet50"
    net.fc = nn.Identity()  # -> pooled features [B, 2048]
    return net, source


# --- The re-ID model and loss. ---


class ReidNet(nn.Module):
    """uint8 or float images [B, 3, H, W] (RGB, 0..255) -> (embeddings [B, D], logits [B, C]), both float32.

    Mirrors msml_jax's ReidModel + EmbeddingHead: normalise with ImageNet mean/std, backbone (under autocast
    when asked), then pooled features -> Dense(embed_dim) -> Dense(num_classes), the head in float32.
    """

    def __init__(self, backbone, num_classes, embed_dim=1024, feature_dim=2048, autocast_dtype=None):
        super().__init__()
        self.backbone = backbone
        self.embedding = nn.Linear(feature_dim, embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.autocast_dtype = autocast_dtype
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        x = ((images.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            features = self.backbone(x)
        with torch.autocast(x.device.type, enabled=False):
            embeddings = self.embedding(features.float())
            return embeddings, self.classifier(embeddings)


def batch_hard_triplet_loss(embeddings, labels, margin=0.3):
    """mean over anchors of (max_{p: y_p = y_a, p != a} d(a, p) - min_{n: y_n != y_a} d(a, n) + margin)_+.

    embeddings [B, D] are l2-normalised first; d is the euclidean distance. Anchors without a positive or a
    negative in the batch are left out (a P x K batch with K >= 2 and P >= 2 has none).
    """
    x = F.normalize(embeddings.float(), dim=1, eps=1e-12)
    sq = (2.0 - 2.0 * x @ x.t()).clamp_min(1e-12)  # |a - b|^2 of unit vectors; clamp keeps sqrt' finite
    dist = sq.sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~neg, float("inf")).amin(1)
    valid = pos.any(1) & neg.any(1)
    per_anchor = F.relu(hardest_pos - hardest_neg + margin)
    return torch.where(valid, per_anchor, torch.zeros_like(per_anchor)).sum() / valid.sum().clamp_min(1)


class TrainLoss(nn.Module):
    """images, labels -> cross-entropy + batch-hard triplet loss (the unit torch.compile compiles)."""

    def __init__(self, net, margin=0.3):
        super().__init__()
        self.net, self.margin = net, margin

    def forward(self, images, labels):
        embeddings, logits = self.net(images)
        return F.cross_entropy(logits, labels) + batch_hard_triplet_loss(embeddings, labels, self.margin)


# --- Measuring. ---


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_flops_per_image(loss_module, images, labels):
    """FLOPs of one forward + backward over `images`, per image (FlopCounterMode: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_module(images, labels).backward()
    loss_module.zero_grad(set_to_none=True)
    return counter.get_total_flops() / images.shape[0]


def peak_flops(device, dtype):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAKS.items():
        if key.lower() in name.lower():
            return peaks[dtype]
    return None


def measure(size, dtype, args, device, compiled):
    """(images/s, seconds/step, FLOPs/image) of the train step for one setting."""
    torch.manual_seed(0)
    backbone, source = resnet50_backbone()  # source names the rows of a failure
    net = ReidNet(backbone, args.num_classes, args.embed_dim,
                  autocast_dtype=torch.bfloat16 if dtype == "bfloat16" else None)
    net = net.to(device).to(memory_format=torch.channels_last)
    loss_module = TrainLoss(net).to(device)
    g = torch.Generator().manual_seed(0)
    # uint8 [B, 3, H, W] in channels_last strides (an NHWC buffer), as a decoded batch would arrive.
    images = torch.randint(0, 256, (args.batch, *size, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    images = images.to(device)
    ids = torch.randperm(args.num_classes, generator=g)[: args.batch // args.K]
    labels = ids.repeat_interleave(args.K).to(device)
    flops = training_flops_per_image(loss_module, images, labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, **({"fused": True} if device.type == "cuda" else {}))
    if compiled:
        torch._dynamo.reset()  # a fresh start per shape: no "automatic dynamic" recompiles from the last setting
        step_loss = torch.compile(loss_module, dynamic=False)
    else:
        step_loss = loss_module

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(images, labels)
        loss.backward()
        optimizer.step()
        return loss

    start = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    if not torch.isfinite(loss).item():
        raise FloatingPointError(f"{source} {size} {dtype}: loss is {loss.item()}")
    if compiled:
        print(f"  (torch.compile: {warmup_seconds:.1f} s for the {args.warmup} warm-up steps, compile included)",
              flush=True)
    return args.batch / seconds, seconds, flops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="224x224,256x128", help="comma-separated HxW")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=128, help="P x K images per step")
    parser.add_argument("--K", type=int, default=4, help="images per identity")
    parser.add_argument("--num_classes", type=int, default=751, help="classifier outputs (Market-1501: 751)")
    parser.add_argument("--embed_dim", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd steps (extra rows)")
    parser.add_argument("--compile_only", action="store_true", help="time only the torch.compile'd steps")
    args = parser.parse_args(argv)
    if args.batch % args.K:
        parser.error("--batch must be a multiple of --K")
    if args.num_classes < args.batch // args.K:
        parser.error("--num_classes must be at least --batch / --K (one class per identity in the batch)")
    dtypes = args.dtypes.split(",")
    for dtype in dtypes:
        if dtype not in ("float32", "bfloat16"):
            parser.error(f"--dtypes: {dtype!r} is not float32 or bfloat16")
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); "
                     "use --device cpu for a smoke test")
        # float32 rows run on TF32 tensor cores, as XLA's default float32 matmuls/convs do on these GPUs.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    try:
        import torchvision
        tv = f"torchvision {torchvision.__version__}"
    except ImportError:
        tv = "torchvision NOT installed: the hand-written PlainResNet50 (torchvision's architecture)"
    tf32 = "float32 = TF32 allowed, " if device.type == "cuda" else ""
    print(f"device: {device.type} {name}; torch {torch.__version__}, {tv}; batch {args.batch} "
          f"(P={args.batch // args.K}, K={args.K}); {args.steps} timed steps after {args.warmup} warm-up; "
          f"{tf32}bfloat16 = autocast; channels_last", flush=True)
    columns = ("size", 8), ("dtype", 9), ("img/s", 9), ("ms/step", 9), ("GFLOP/img", 10), ("TFLOP/s", 8), ("util", 6)
    print(f"{'backbone':<16} " + " ".join(f"{c:>{w}}" for c, w in columns), flush=True)
    modes = [True] if args.compile_only else [False, True] if args.compile else [False]
    for compiled in modes:
        for size_text in args.sizes.split(","):
            size = tuple(int(v) for v in size_text.lower().split("x"))
            for dtype in dtypes:
                ips, seconds, flops = measure(size, dtype, args, device, compiled)
                label = "torch+compile" if compiled else "torch_resnet50"
                achieved = flops * ips
                peak = peak_flops(device, dtype)
                util = f"{achieved / peak:6.1%}" if peak else f"{'-':>6}"
                print(f"{label:<16} {size_text:>8} {dtype:>9} {ips:9.1f} {seconds * 1e3:9.1f} {flops / 1e9:10.2f} "
                      f"{achieved / 1e12:8.3f} {util}", flush=True)


if __name__ == "__main__":
    main()
