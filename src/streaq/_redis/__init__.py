"""streaq's Redis layer: a thin, cancel-safe client on anyio streams with hiredis for RESP.

Nothing outside this subpackage imports hiredis or touches sockets. Layers, bottom up:
``_protocol`` (sans-IO RESP) → ``_connection`` (one stream, cancel-safe round trips) → ``_pool``
(bounded, LIFO) → ``_client`` (commands, pipelines, functions, dedicated connections) and
``_pubsub`` → ``_open`` (``open_client``: picks the topology, runs the client); ``_watchdog``
bounds every round trip without a cancel scope per command, ``_errors`` maps failures to
``redis.exceptions`` once, ``_config`` parses URLs, ``_backoff`` paces reconnects. Topologies:
``_sentinel`` (a connector that finds the master through the sentinels), ``_cluster`` (a client
routing by hash slot, over the sans-IO slot maths of ``_slots``), ``_routed`` (connections that
turn "wrong server" replies into reconnects).
"""

from ._backoff import Backoff as Backoff
from ._backoff import retry_transient as retry_transient
from ._client import RedisClient as RedisClient
from ._cluster import ClusterClient as ClusterClient
from ._config import RedisConfig as RedisConfig
from ._config import mask_url as mask_url
from ._config import parse_config as parse_config
from ._connection import Connection as Connection
from ._connection import Connector as Connector
from ._connection import connect as connect
from ._errors import RECOVERABLE as RECOVERABLE
from ._errors import BusyGroupError as BusyGroupError
from ._errors import NoGroupError as NoGroupError
from ._errors import RedisVersionError as RedisVersionError
from ._errors import WrongTypeError as WrongTypeError
from ._errors import is_transient as is_transient
from ._functions import FunctionLibrary as FunctionLibrary
from ._open import open_client as open_client
from ._pool import ConnectionPool as ConnectionPool
from ._protocol import pairs as pairs
from ._pubsub import Message as Message
from ._pubsub import PubSub as PubSub
from ._routed import RoutedConnection as RoutedConnection
from ._sentinel import SentinelConnector as SentinelConnector
from ._watchdog import Watchdog as Watchdog

__all__ = [
    "RECOVERABLE",
    "Backoff",
    "BusyGroupError",
    "ClusterClient",
    "Connection",
    "ConnectionPool",
    "Connector",
    "FunctionLibrary",
    "Message",
    "NoGroupError",
    "PubSub",
    "RedisClient",
    "RedisConfig",
    "RedisVersionError",
    "RoutedConnection",
    "SentinelConnector",
    "Watchdog",
    "WrongTypeError",
    "connect",
    "is_transient",
    "mask_url",
    "open_client",
    "pairs",
    "parse_config",
    "retry_transient",
]
