"""The CloudEvents NATS protocol binding for Python: structured and binary content modes.

    from cloudevents_nats import Event, from_nats, to_binary, to_structured

    msg = to_binary(Event({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}, {}))
    await nc.publish("orders.created", msg.body, headers=msg.headers)
    event = from_nats(received.data, received.headers)

No dependencies; works with nats-py's `publish`/`Msg` and with the `cloudevents` SDK's
events (anything with `get_attributes()` and `get_data()`).
"""

from .binding import (
    BATCH_CONTENT_TYPE,
    CE_PREFIX,
    CONTENT_TYPE_HEADER,
    DEFAULT_LIMITS,
    NATS_MSG_ID_HEADER,
    SPECVERSION,
    STRUCTURED_CONTENT_TYPE,
    Dumps,
    Event,
    Limits,
    Message,
    Mode,
    SupportsCloudEvent,
    content_mode,
    from_msg,
    from_nats,
    is_json_media_type,
    media_type,
    to_binary,
    to_structured,
    validate_attributes,
)
from .errors import BindingError, Problem
from .headers import canonical_string, percent_decode, percent_encode, unquote_header_value

__all__ = [
    "BATCH_CONTENT_TYPE",
    "CE_PREFIX",
    "CONTENT_TYPE_HEADER",
    "DEFAULT_LIMITS",
    "NATS_MSG_ID_HEADER",
    "SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "BindingError",
    "Dumps",
    "Event",
    "Limits",
    "Message",
    "Mode",
    "Problem",
    "SupportsCloudEvent",
    "canonical_string",
    "content_mode",
    "from_msg",
    "from_nats",
    "is_json_media_type",
    "media_type",
    "percent_decode",
    "percent_encode",
    "to_binary",
    "to_structured",
    "unquote_header_value",
    "validate_attributes",
]

__version__ = "0.1.0"
