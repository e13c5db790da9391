/**
 * Who is calling: the service role (its key, or a JWT whose role is service_role) or a user
 * (a JWT whose `sub` is the user's id). JWTs are verified with jose, never by hand.
 */
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
} from "jose";
import { timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { HttpError } from "./errors.ts";

export interface AuthConfig {
  /** SUPABASE_SERVICE_ROLE_KEY: the trigger (pg_net), pg_cron and the worker send it. */
  serviceRoleKey?: string;
  /** SUPABASE_JWT_SECRET: verifies HS256 tokens. */
  jwtSecret?: string;
  /** SUPABASE_JWKS_URL: verifies tokens signed with asymmetric keys. */
  jwksUrl?: string;
}

export type Caller = { role: "service" } | { role: "user"; userId: string };

/** Signing algorithms taken from the JWKS; HS256 goes only to the shared secret. */
const JWKS_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];
const userId = z.guid();

export function createAuthenticator(config: AuthConfig): (request: Request) => Promise<Caller> {
  const serviceKey = config.serviceRoleKey ? sha256(config.serviceRoleKey) : undefined;
  const secret = config.jwtSecret ? new TextEncoder().encode(config.jwtSecret) : undefined;
  const jwks = config.jwksUrl ? createRemoteJWKSet(new URL(config.jwksUrl)) : undefined;

  async function verify(token: string): Promise<JWTPayload> {
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw invalidToken("the bearer token is neither the service role key nor a JWT");
    }
    try {
      if (alg === "HS256" && secret) {
        return (await jwtVerify(token, secret, { algorithms: ["HS256"], requiredClaims: ["exp"] }))
          .payload;
      }
      if (alg !== "HS256" && jwks) {
        return (await jwtVerify(token, jwks, {
          algorithms: JWKS_ALGORITHMS,
          requiredClaims: ["exp"],
        })).payload;
      }
    } catch (e) {
      if (e instanceof errors.JWTExpired) throw invalidToken("the token has expired");
      // a JWKS that cannot be fetched is our problem, not the caller's: let it be a 500
      if (e instanceof errors.JOSEError && !(e instanceof errors.JWKSTimeout)) {
        throw invalidToken(`the token was refused: ${e.message}`);
      }
      throw e;
    }
    throw invalidToken(`tokens signed with ${alg ?? "no algorithm"} are not accepted here`);
  }

  return async (request) => {
    const token = bearerToken(request);
    // digests have a fixed length, so the comparison reveals neither the key nor its length
    if (serviceKey && timingSafeEqual(await serviceKey, await sha256(token))) {
      return { role: "service" };
    }
    const claims = await verify(token);
    if (claims.role === "service_role") return { role: "service" };
    const sub = userId.safeParse(claims.sub);
    if (!sub.success) throw invalidToken("the token names no user: its sub must be a user id");
    return { role: "user", userId: sub.data };
  };
}

/** 403 unless the caller is the service role. */
export function requireService(caller: Caller): void {
  if (caller.role !== "service") {
    throw new HttpError(403, "FORBIDDEN", "only the service role may call this route");
  }
}

function bearerToken(request: Request): string {
  const header = request.headers.get("authorization");
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  if (!match) {
    throw new HttpError(
      401,
      "UNAUTHENTICATED",
      "send Authorization: Bearer <a user's access token or the service role key>",
    );
  }
  return match[1]!;
}

function invalidToken(message: string): HttpError {
  return new HttpError(401, "INVALID_TOKEN", message);
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}
