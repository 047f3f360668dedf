"""Who people are: local users, password and token verifiers, (later) TOTP, OIDC, SAML, SCIM."""
