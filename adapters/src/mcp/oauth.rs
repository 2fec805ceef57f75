//! OAuth 2.0 client credentials (RFC 6749 §4.4) toward upstream MCP servers: the token
//! request's form body, with the client authenticating in the body (`client_secret_post`),
//! and an optional `scope`, `audience` (Auth0, Okta) and `resource` (RFC 8707, which MCP's
//! authorization spec asks clients to send). The answer is a standard token response: read it
//! with [`crate::gemini::vertex_auth::parse_token_response`].

use crate::bedrock::sigv4::uri_encode;

/// An application the gateway mints tokens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
}

impl ClientCredentials {
    /// `application/x-www-form-urlencoded` body of the token request.
    pub fn request_body(&self) -> String {
        let mut body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            uri_encode(&self.client_id),
            uri_encode(&self.client_secret)
        );
        for (name, value) in [("scope", &self.scope), ("audience", &self.audience), ("resource", &self.resource)] {
            if let Some(v) = value {
                body.push('&');
                body.push_str(name);
                body.push('=');
                body.push_str(&uri_encode(v));
            }
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_encodes_every_field() {
        let c = ClientCredentials {
            token_url: "https://auth.example/token".into(),
            client_id: "gateway".into(),
            client_secret: "s3cr&t=+".into(),
            scope: Some("tools:read tools:call".into()),
            audience: None,
            resource: Some("https://mcp.example/mcp".into()),
        };
        assert_eq!(
            c.request_body(),
            "grant_type=client_credentials&client_id=gateway&client_secret=s3cr%26t%3D%2B&scope=tools%3Aread%20tools%3Acall&resource=https%3A%2F%2Fmcp.example%2Fmcp"
        );
    }
}
