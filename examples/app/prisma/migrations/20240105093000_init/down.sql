-- DropIndex
DROP INDEX "OperatorSession_shopId_idx";

-- DropIndex
DROP INDEX "Shop_domain_key";

-- DropTable
PRAGMA foreign_keys=off;
DROP TABLE "OperatorSession";
PRAGMA foreign_keys=on;

-- DropTable
PRAGMA foreign_keys=off;
DROP TABLE "Shop";
PRAGMA foreign_keys=on;
