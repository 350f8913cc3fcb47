"""PyTorch definitions of Pai's model zoo, written independently of Pai's C# models, for oracles
and benchmarks that run Debian's python3-torch (the same libtorch build). Parameter names match
Pai's (vit-tiny via to_torch_name). build(name, c, h, w, classes) returns an nn.Module."""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F


def build(name, c, h, w, k):
    class LeNet300(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(c * h * w, 300)
            self.fc2 = nn.Linear(300, 100)
            self.fc3 = nn.Linear(100, k)
        def forward(self, x):
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.reshape(x.shape[0], -1))))))

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(c, 20, 5)
            self.conv2 = nn.Conv2d(20, 50, 5)
            fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
            self.fc1 = nn.Linear(50 * fh * fw, 500)
            self.fc2 = nn.Linear(500, k)
        def forward(self, x):
            x = F.max_pool2d(self.conv1(x), 2)
            x = F.max_pool2d(self.conv2(x), 2)
            return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    VGG_CFG = {
        'vgg11': [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
        'vgg16': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
        'vgg19': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
    }

    class PoolUnlessTiny(nn.Module):
        def forward(self, x):
            return x if min(x.shape[-2], x.shape[-1]) < 2 else F.max_pool2d(x, 2)

    class VGG(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            layers, ch = [], c
            for v in cfg:
                if v == 'M':
                    layers.append(PoolUnlessTiny())
                else:
                    layers += [nn.Conv2d(ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                    ch = v
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(ch, k)
        def forward(self, x):
            return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        def forward(self, x):
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))

    class ResNet(nn.Module):
        def __init__(self, stem, widths, blocks):
            super().__init__()
            self.conv1 = nn.Conv2d(c, stem, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            ch = stem
            self.stages = []
            for i, (wd, n) in enumerate(zip(widths, blocks)):
                layers = []
                for b in range(n):
                    layers.append(Block(ch, wd, 2 if i > 0 and b == 0 else 1))
                    ch = wd
                setattr(self, f'layer{i + 1}', nn.Sequential(*layers))
                self.stages.append(f'layer{i + 1}')
            self.fc = nn.Linear(ch, k)
        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            for s in self.stages:
                x = getattr(self, s)(x)
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    class ViT(nn.Module):
        def __init__(self, patch=4, dim=192, depth=6, heads=3, mlp=384):
            super().__init__()
            tokens = (h // patch) * (w // patch)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
            self.patch_embed = nn.Conv2d(c, dim, patch, patch)
            self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation='gelu',
                                                                     batch_first=True, norm_first=True) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, k)
        def forward(self, x):
            p = self.patch_embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), p], 1) + self.pos_embed
            return self.head(self.norm(self.blocks(t))[:, 0])

    builders = {
        'lenet300': LeNet300, 'lenet5': LeNet5,
        'vgg11': lambda: VGG(VGG_CFG['vgg11']), 'vgg16': lambda: VGG(VGG_CFG['vgg16']), 'vgg19': lambda: VGG(VGG_CFG['vgg19']),
        'resnet20': lambda: ResNet(16, [16, 32, 64], [3, 3, 3]), 'resnet32': lambda: ResNet(16, [16, 32, 64], [5, 5, 5]),
        'resnet56': lambda: ResNet(16, [16, 32, 64], [9, 9, 9]),
        'resnet18': lambda: ResNet(64, [64, 128, 256, 512], [2, 2, 2, 2]), 'vit-tiny': ViT,
    }
    return builders[name]()


def to_torch_name(model_name, n):
    """Pai's parameter name -> the name in the PyTorch definition."""
    if model_name != 'vit-tiny':
        return n
    n = re.sub(r'\.attn\.qkv\.weight$', '.self_attn.in_proj_weight', n)
    n = re.sub(r'\.attn\.qkv\.bias$', '.self_attn.in_proj_bias', n)
    n = n.replace('.attn.proj.', '.self_attn.out_proj.')
    return n.replace('.mlp.fc1.', '.linear1.').replace('.mlp.fc2.', '.linear2.')


def load_pai_state(model, model_name, tensors, dtype):
    """Loads Pai's parameters and buffers (name -> tensor, Pai names) with strict=True; Pai keeps
    no BN batch counter, so those entries keep the model's own values."""
    state = {to_torch_name(model_name, n): t.to(dtype) for n, t in tensors.items()}
    own = model.state_dict()
    for key in own:
        if key.endswith('num_batches_tracked'):
            state[key] = own[key]
    model.load_state_dict(state, strict=True)
