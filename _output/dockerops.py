"""
The ``dockerops`` outputter: a progress event of the dockerops runner as its one line.

``salt-run`` hands each progress event to the outputter the event names, as
``{"suffix": "progress", "event": {"message": ..., ...}}``; the default
(nested) shows that as a seven-line block. ``--out`` on the command line still
wins (``--out=json`` gets the events as JSON).

CLI Example:

.. code-block:: bash

    salt-run dockerops.rolling_update web tgt='prd-*'
"""

import salt.output


def output(data, **kwargs):  # pylint: disable=unused-argument
    """The event's message; anything else as the nested outputter shows it."""
    event = data.get("event") if isinstance(data, dict) else None
    if isinstance(event, dict) and isinstance(event.get("message"), str):
        return event["message"]
    return salt.output.out_format(data, "nested", __opts__)
