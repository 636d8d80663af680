"""FedBN (Li et al. 2021) as the LIPS reference runs it: share conv and linear weights only.

BN affine parameters, BN running statistics and all biases stay on the client (REFERENCE.md
decision 3). ``share_bias: true`` gives textbook FedBN, which also averages the biases.
"""

from typing import ClassVar

from fedlab_cli.engine.method import Method, MethodParams
from fedlab_cli.models import Kind, TensorRole


class FedBNParams(MethodParams):
    share_bias: bool = False


class FedBN(Method):
    Params: ClassVar[type[MethodParams]] = FedBNParams
    description: ClassVar[str] = "FedBN: share conv/linear weights; BN and biases stay local"

    def shares(self, name: str, role: TensorRole) -> bool:
        return role.kind is Kind.WEIGHT or (self.params.share_bias and role.kind is Kind.BIAS)
