/**
 * Who is calling: the service role (a secret key in `apikey` or as the bearer token, or a
 * JWT whose role is service_role) or a user (a JWT whose `sub` is the user's id). JWTs are
 * verified with jose, never by hand: asymmetric ones with the project's JWKS (given, or
 * fetched from the project), HS256 ones with a shared secret if one is configured.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";
import { timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { HttpError } from "./errors.ts";

export interface AuthConfig {
  /** The legacy SUPABASE_SERVICE_ROLE_KEY: the trigger (pg_net), pg_cron and the worker send it. */
  serviceRoleKey?: string;
  /** More service keys: the values of SUPABASE_SECRET_KEYS (`sb_secret_…`, not JWTs). */
  serviceKeys?: string[];
  /** QUICKJS_JWT_SECRET: verifies HS256 tokens (hosted projects give no JWT secret). */
  jwtSecret?: string;
  /** SUPABASE_JWKS: the project's public keys, as the platform puts them in the env. */
  jwks?: JSONWebKeySet;
  /** The project's JWKS endpoint, asked for keys the given JWKS lacks (rotation). */
  jwksUrl?: string;
}

export type Caller = { role: "service" } | { role: "user"; userId: string };

/** Signing algorithms taken from the JWKS; HS256 goes only to the shared secret. */
const JWKS_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];
const userId = z.guid();

export function createAuthenticator(config: AuthConfig): (request: Request) => Promise<Caller> {
  const serviceKeys = [config.serviceRoleKey, ...(config.serviceKeys ?? [])]
    .filter((key): key is string => !!key)
    .map(sha256);
  const secret = config.jwtSecret ? new TextEncoder().encode(config.jwtSecret) : undefined;
  const jwks = keySource(config);

  async function isServiceKey(candidate: string): Promise<boolean> {
    // digests have a fixed length, so the comparison reveals neither a key nor its length
    const digest = await sha256(candidate);
    let found = false;
    for (const key of serviceKeys) found = timingSafeEqual(await key, digest) || found;
    return found;
  }

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
    // new secret keys are not JWTs and arrive in `apikey`; a user's request carries the
    // publishable key there, and its own token as the bearer
    const apikey = request.headers.get("apikey")?.trim();
    if (apikey && await isServiceKey(apikey)) return { role: "service" };
    const token = bearerToken(request);
    if (await isServiceKey(token)) return { role: "service" };
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
      "send Authorization: Bearer <a user's access token>, or a secret key in apikey",
    );
  }
  return match[1]!;
}

/**
 * Public keys for asymmetric JWTs: the JWKS in the env first (no request needed); a key it
 * lacks is looked up at the project's endpoint (cached by jose), as after a key rotation.
 */
function keySource(config: AuthConfig): JWTVerifyGetKey | undefined {
  const local = config.jwks?.keys?.length ? createLocalJWKSet(config.jwks) : undefined;
  const remote = config.jwksUrl ? createRemoteJWKSet(new URL(config.jwksUrl)) : undefined;
  if (!local || !remote) return local ?? remote;
  return async (header, token) => {
    try {
      return await local(header, token);
    } catch (e) {
      if (e instanceof errors.JWKSNoMatchingKey) return await remote(header, token);
      throw e;
    }
  };
}

function invalidToken(message: string): HttpError {
  return new HttpError(401, "INVALID_TOKEN", message);
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}
