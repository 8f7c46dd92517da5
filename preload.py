"""Command-line flags of the extension (called by the WebUI before it parses its arguments).

No secret ever goes here: the WebUI shows its command line over its own API. The API key stays in the
connection file the Cloud tab saves (readable by its owner only).
"""


def preload(parser):
    parser.add_argument(
        "--esd-api-url",
        type=str,
        default=None,
        help="ESD middleware API URL with its stage, e.g. https://abc.execute-api.us-east-1.amazonaws.com/prod "
        "(overrides the saved connection's URL; the API key is never a flag)",
    )
    parser.add_argument(
        "--esd-login",
        action="store_true",
        help="check WebUI logins against the ESD middleware's users (passwords never leave the middleware); "
        "cloud generations then act as the logged-in user",
    )
