# Appended to an Evennia game's server/conf/settings.py for bench/telnet_evennia.py: thousands
# of telnet guests from one address, and nothing served but telnet.
MAX_CONNECTION_RATE = 1000000
MAX_COMMAND_RATE = 1000000
GUEST_ENABLED = True
GUEST_LIST = ["Guest" + str(s + 1) for s in range(5000)]
CREATION_THROTTLE_LIMIT = None
LOGIN_THROTTLE_LIMIT = None
WEBSERVER_ENABLED = False
WEBSOCKET_CLIENT_ENABLED = False
# Each guest account gets a hashed random password: Django's PBKDF2 takes ~0.3 s of CPU a
# guest, which is sign-in cost, not idle memory.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
