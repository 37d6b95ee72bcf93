"""State dicts in the layouts MMAction2 writes or releases, made from their naming rules
(no download, no MMAction2 needed): MMAction2's own ResNet (mmcv ConvModule names), timm
0.6's Swin (stage-end PatchMerging, persistent ``relative_position_index`` / ``attn_mask``
buffers), mmpretrain's MobileOne in its train and deploy forms."""
from __future__ import annotations

import re

import torch


def bn_state(prefix, c, g):
    return {f"{prefix}.weight": torch.rand(c, generator=g), f"{prefix}.bias": torch.randn(c, generator=g),
            f"{prefix}.running_mean": torch.randn(c, generator=g),
            f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(7)}


# mmpretrain MobileOne.arch_zoo: blocks, width factors, conv branches, SE blocks per stage
MOBILEONE_ARCH = {"s0": ([2, 8, 10, 1], [0.75, 1.0, 1.0, 2.0], [4, 4, 4, 4], [0, 0, 0, 0]),
                  "s4": ([2, 8, 10, 1], [3.0, 3.5, 3.5, 4.0], [1, 1, 1, 1], [0, 0, 5, 1])}


def mmpretrain_mobileone_blocks(arch):
    """(name, in, out, kernel, stride, groups, branches, se) for each MobileOneBlock, in
    mmpretrain's order: stage0, then per stage a depthwise 3x3 and a pointwise 1x1 block
    per layer, the first layer strided, SE on the stage's last ``num_se`` layers."""
    blocks_n, widths, branches, ses = MOBILEONE_ARCH[arch]
    base = [64, 128, 256, 512]
    c = min(64, int(base[0] * widths[0]))
    out = [("stage0", 3, c, 3, 2, 1, 1, False)]
    for i, n in enumerate(blocks_n):
        planes = int(base[i] * widths[i])
        for j in range(n):
            se = j >= n - ses[i]
            stride = 2 if j == 0 else 1
            out.append((f"stage{i + 1}.{2 * j}", c, c, 3, stride, c, branches[i], se))
            out.append((f"stage{i + 1}.{2 * j + 1}", c, planes, 1, 1, 1, branches[i], se))
            c = planes
    return out


def mmpretrain_mobileone_tsn(arch="s0", num_classes=5, deploy=False, seed=0):
    """An MMAction2 TSN MobileOne state dict in mmpretrain's names, train or deploy form."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, cin, cout, k, stride, groups, branches, se in mmpretrain_mobileone_blocks(arch):
        p = f"backbone.{name}"
        if deploy:
            sd[f"{p}.branch_reparam.weight"] = torch.randn(cout, cin // groups, k, k, generator=g) * 0.3
            sd[f"{p}.branch_reparam.bias"] = torch.randn(cout, generator=g) * 0.1
        else:
            if cin == cout and stride == 1:
                sd.update(bn_state(f"{p}.branch_norm", cout, g))
            if k > 1:
                sd[f"{p}.branch_scale.conv.weight"] = torch.randn(cout, cin // groups, 1, 1, generator=g) * 0.3
                sd.update(bn_state(f"{p}.branch_scale.norm", cout, g))
            for b in range(branches):
                sd[f"{p}.branch_conv_list.{b}.conv.weight"] = torch.randn(cout, cin // groups, k, k, generator=g) * 0.3
                sd.update(bn_state(f"{p}.branch_conv_list.{b}.norm", cout, g))
        if se:  # mmpretrain SELayer(ratio=16): two 1x1 ConvModules with bias, no norm
            mid = max(8, (cout // 16 + 4) // 8 * 8)
            sd[f"{p}.se.conv1.conv.weight"] = torch.randn(mid, cout, 1, 1, generator=g) * 0.1
            sd[f"{p}.se.conv1.conv.bias"] = torch.randn(mid, generator=g) * 0.1
            sd[f"{p}.se.conv2.conv.weight"] = torch.randn(cout, mid, 1, 1, generator=g) * 0.1
            sd[f"{p}.se.conv2.conv.bias"] = torch.randn(cout, generator=g) * 0.1
    sd["cls_head.fc_cls.weight"] = torch.randn(num_classes, cout, generator=g)
    sd["cls_head.fc_cls.bias"] = torch.randn(num_classes, generator=g)
    return sd


def mmpretrain_mobileone_features(sd, arch, x):
    """mmpretrain MobileOne's forward (eval BN) over ``sd``, written from its rules: per
    block the sum of its branches (BN identity, 1x1 scale conv+BN, kxk conv+BN each), then
    SE (avg pool, conv1, ReLU, conv2, sigmoid, scale), then ReLU; global average pool."""
    F = torch.nn.functional

    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], False, 0.0, 1e-5)

    for name, cin, cout, k, stride, groups, branches, se in mmpretrain_mobileone_blocks(arch):
        p = f"backbone.{name}"
        if f"{p}.branch_reparam.weight" in sd:
            y = F.conv2d(x, sd[f"{p}.branch_reparam.weight"], sd[f"{p}.branch_reparam.bias"],
                         stride, k // 2, 1, groups)
        else:
            y = bn(x, f"{p}.branch_norm") if f"{p}.branch_norm.weight" in sd else 0
            if k > 1:
                y = y + bn(F.conv2d(x, sd[f"{p}.branch_scale.conv.weight"], None, stride, 0, 1, groups),
                           f"{p}.branch_scale.norm")
            for b in range(branches):
                y = y + bn(F.conv2d(x, sd[f"{p}.branch_conv_list.{b}.conv.weight"], None, stride,
                                    k // 2, 1, groups), f"{p}.branch_conv_list.{b}.norm")
        if se:
            w = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), sd[f"{p}.se.conv1.conv.weight"],
                                sd[f"{p}.se.conv1.conv.bias"]))
            y = y * torch.sigmoid(F.conv2d(w, sd[f"{p}.se.conv2.conv.weight"], sd[f"{p}.se.conv2.conv.bias"]))
        x = F.relu(y)
    return x.mean((2, 3))


def to_mmaction_key(key: str):
    """Our (torchvision ResNet) key -> MMAction2's ResNet/TSNHead key (mmcv ConvModule names):
    conv1 -> conv1.conv, bn1 -> conv1.bn, layerX.Y.convZ -> .convZ.conv, bnZ -> .convZ.bn,
    downsample.0/1 -> downsample.conv/bn, fc -> cls_head.fc_cls."""
    if key.startswith(("fc.", "cls_head.fc.", "head.fc.")):
        return "cls_head.fc_cls." + key.split(".")[-1]
    if not key.startswith("backbone."):
        return None
    k = key[len("backbone."):]
    k = re.sub(r"^conv1\.", "conv1.conv.", k)
    k = re.sub(r"^bn1\.", "conv1.bn.", k)
    k = re.sub(r"(layer\d+\.\d+)\.conv(\d)\.", r"\1.conv\2.conv.", k)
    k = re.sub(r"(layer\d+\.\d+)\.bn(\d)\.", r"\1.conv\2.bn.", k)
    k = re.sub(r"downsample\.0\.", "downsample.conv.", k)
    k = re.sub(r"downsample\.1\.", "downsample.bn.", k)
    return "backbone." + k


def timm06_swin_layout(backbone: torch.nn.Module) -> dict:
    """A timm >= 0.9 Swin's state dict as timm 0.6 saved the same weights (MMAction2's
    Swin-B TSN, 2022-09): stage ``i``'s PatchMerging, which timm >= 0.9 puts at the start
    of stage ``i`` (``layers.i.downsample``, i = 1..3), ends stage ``i - 1`` there
    (``layers.{i-1}.downsample``); the attention buffers timm >= 0.9 recomputes
    (``relative_position_index``, the shifted windows' ``attn_mask``) are saved as well."""
    out = {}
    for key, value in backbone.state_dict().items():
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
        out[key] = value.clone()
    for key, value in backbone.named_buffers():
        if key.endswith(("relative_position_index", "attn_mask")):
            out[key] = value.clone()
    return out


def mmaction_tsn_state(model, backbone: str) -> dict:
    """Our TSN's state dict as MMAction2 saves that TSN: ``backbone.*`` in MMAction2's
    ResNet names for its own ResNets, the library's names otherwise; ``fc`` ->
    ``cls_head.fc_cls``."""
    own_resnet = backbone in ("resnet18", "resnet50", "resnet101")
    out = {}
    for key, value in model.state_dict().items():
        out[to_mmaction_key(key) if own_resnet or key.startswith("fc.") else key] = value.clone()
    return out
