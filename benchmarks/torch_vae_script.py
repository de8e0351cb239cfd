"""The classic PyTorch VAE script (pytorch/examples vae/main.py) with jaxtrain's model, as
a whole command: `make bench` times it against `jaxtrain fit --epochs N`.

    python benchmarks/torch_vae_script.py --dataset fashion-mnist --data-dir DIR --epochs 3

Each epoch: a torchvision dataset with ToTensor per image through a shuffling
DataLoader, a train pass, a test pass with the test loss printed, then torch.save of
the model. On a GPU where torch sees one (--device). Imports torch and torchvision only
(no JAX).
"""

import argparse
import tempfile
from pathlib import Path

import torch
import torch_reference as ref  # benchmarks/, beside this script
from torchvision import datasets, transforms


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", required=True, help="holds FashionMNIST/raw/ or MNIST/raw/")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cls = datasets.FashionMNIST if args.dataset == "fashion-mnist" else datasets.MNIST
    to_tensor = transforms.ToTensor()
    train = torch.utils.data.DataLoader(cls(args.data_dir, train=True, transform=to_tensor),
                                        batch_size=args.batch_size, shuffle=True)
    test = torch.utils.data.DataLoader(cls(args.data_dir, train=False, transform=to_tensor),
                                       batch_size=args.batch_size)
    model = ref.TorchVAE().to(device)
    step = ref.make_step(model, ref.vae_loss, lr=4e-3)  # clipping + AdamW, as jaxtrain
    path = Path(tempfile.mkdtemp()) / "vae.pt"
    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in train:
            step(images.view(-1, 784).to(device), labels.to(device))
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for images, labels in test:
                images, labels = images.view(-1, 784).to(device), labels.to(device)
                total += float(ref.vae_loss(model, images, labels)) * len(images)
                count += len(images)
        print(f"epoch {epoch}: test loss {total / count:.2f}", flush=True)
        torch.save({"model": model.state_dict()}, path)


if __name__ == "__main__":
    main()
