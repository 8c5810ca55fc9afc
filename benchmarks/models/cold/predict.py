"""Returns its input; setup() does nothing that takes time."""

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def setup(self) -> None:
        self.ready = True

    def run(self, text: str = Input(description="Echoed back", default="")) -> str:
        return text
