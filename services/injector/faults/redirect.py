"""What DNSChaos and HTTPChaos share: an nftables table in a target's netns that redirects its
traffic to a server the injector runs there (the DNS responder, the HTTP proxy), carrying the
experiment's deadline. Installing the table maps nft's failures to fault errors and releases the
server's rule when the table cannot be installed; recovery removes the table from every netns.
"""

from __future__ import annotations

from collections.abc import Callable

from chaosbus.injector.backends import nft
from chaosbus.injector.faults import FaultContext, FaultError


def install(
    ctx: FaultContext, path: str, table: str, render: Callable[[], str], release: Callable[[str, str], None], kind: str
) -> None:
    """Render and apply the redirect table (through the fault's backends); on failure the server
    forgets this table's rule.
    """
    try:
        ctx.backends.nft.apply(path, table, render())
    except ValueError as e:
        release(path, table)
        raise FaultError(f"invalid {kind}: {e}", retryable=False) from e
    except nft.NetnsGone as e:
        release(path, table)
        raise FaultError(f"target gone: {e}", retryable=False) from e
    except nft.NftError as e:
        release(path, table)
        raise FaultError(str(e), retryable=True) from e


def remove(ctx: FaultContext, table: str, release: Callable[[str, str], None]) -> int:
    """Delete the table in every netns of the target and release the server's rule there; how many
    tables were deleted (0: every netns is gone, and the tables with them).
    """
    removed = 0
    for path in ctx.netns_paths():
        try:
            ctx.backends.nft.delete(path, table)
            removed += 1
        except nft.NetnsGone:
            pass
        except nft.NftError as e:
            raise FaultError(str(e), retryable=True) from e
        release(path, table)
    return removed
