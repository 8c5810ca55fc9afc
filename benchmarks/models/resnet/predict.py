"""ResNet-50 (random weights, bf16, eval) on CUDA: `run(batch)` classifies a resident random batch."""

from cog import BaseRunner, Input

MAX_BATCH = 256


class Runner(BaseRunner):
    def setup(self) -> None:
        import torch
        import torchvision

        torch.backends.cudnn.benchmark = True
        self.torch = torch
        self.model = torchvision.models.resnet50(weights=None).to("cuda", torch.bfloat16).eval()
        self.x = torch.randn(MAX_BATCH, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
        with torch.inference_mode():  # warm cuDNN's algorithm choice for the default batch
            self.model(self.x[:64])
        torch.cuda.synchronize()

    def run(self, batch: int = Input(description="Images in the batch", default=64, ge=1, le=MAX_BATCH)) -> int:
        with self.torch.inference_mode():
            top = self.model(self.x[:batch]).argmax(dim=1).cpu()  # the classes come back to the host
        return int(top.numel())
