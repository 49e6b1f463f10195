-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_OperatorSession" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "shopId" TEXT NOT NULL,
    "operator" TEXT NOT NULL,
    "scope" TEXT NOT NULL,
    "accessToken" TEXT NOT NULL,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "OperatorSession_shopId_fkey" FOREIGN KEY ("shopId") REFERENCES "Shop" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
INSERT INTO "new_OperatorSession" ("accessToken", "createdAt", "id", "operator", "scope", "shopId") SELECT "accessToken", "createdAt", "id", "operator", "scope", "shopId" FROM "OperatorSession";
DROP TABLE "OperatorSession";
ALTER TABLE "new_OperatorSession" RENAME TO "OperatorSession";
CREATE INDEX "OperatorSession_shopId_idx" ON "OperatorSession"("shopId");
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;
