"""Returns its input: every microsecond a prediction takes is the platform's."""

from cog import BaseRunner, Input


class Runner(BaseRunner):
    async def run(self, text: str = Input(description="Echoed back", default="")) -> str:
        return text
