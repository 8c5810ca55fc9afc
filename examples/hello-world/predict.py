"""The smallest useful Cog model: a greeting, written with the legacy predict() API."""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.greeting = "hello"

    def predict(
        self,
        text: str = Input(description="Who to greet", default="world"),
        repeat: int = Input(description="How many times to repeat the greeting", default=1, ge=1, le=10),
    ) -> str:
        return " ".join([f"{self.greeting} {text}"] * repeat)
